"""LoRA-DPO training throughput: selfalign's trainer versus TRL's DPOTrainer, same data, one process.

64 preference pairs with lengths like a real round's (prompt 32-160 tokens, each response 16-192),
LoRA r=16 on every linear projection, batch size 8, one epoch, fp32, gradient checkpointing off
(TRL's fastest settings on a CPU; its defaults, bf16 and checkpointing, are far slower here). Ours
runs twice: one padded row per response (train.packing=false) and packed (the default). Tokens
counted: prompt + chosen + prompt + rejected of every pair per epoch, over the whole wall time of each
trainer (reference log-probs included); each rate is also put as a share of the bound (bound.py).
Target: ours >= 2x TRL, with a comparable final loss.
With --sft the same prompts and chosen answers train LoRA-SFT (train.loss=sft: one sequence, no
reference) against TRL's SFTTrainer (loss on the answer only, no packing across examples); tokens
counted: prompt + answer; bound 4 x weights per token.
Needs the benchmark extra: pip install -e '.[bench]'
Run: .venv/bin/python benchmarks/train.py [--pairs 64] [--epochs 1] [--model smollm2-135m] [--skip-trl] [--sft]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--skip-trl", action="store_true", help="only our trainer's levers")
    parser.add_argument("--sft", action="store_true", help="SFT on the chosen answers instead of DPO on the pairs")
    args = parser.parse_args()

    import bound

    from selfalign import config, models
    from selfalign.training.trainer import Example, TrainJob, train

    model, tok = models.load(args.model, device="cpu")
    rng = random.Random(0)
    vocab = [i for i in range(200, min(tok.vocab_size, 20000))]

    def text(n: int) -> str:
        return tok.decode([rng.choice(vocab) for _ in range(n)])

    rows = [{"prompt": text(rng.randint(32, 160)), "chosen": text(rng.randint(16, 192)),
             "rejected": text(rng.randint(16, 192))} for _ in range(args.pairs)]
    examples = [Example(tok(r["prompt"], add_special_tokens=False)["input_ids"],
                        tok(r["chosen"], add_special_tokens=False)["input_ids"],
                        None if args.sft else tok(r["rejected"], add_special_tokens=False)["input_ids"])
                for r in rows]
    tokens = sum(len(e.prompt) * len(e.sequences()) + sum(map(len, e.sequences())) for e in examples) * args.epochs
    sets = [f"train.batch_size={args.batch_size}", f"train.epochs={args.epochs}", "train.learning_rate=5e-5",
            "train.lora_r=16", "train.lora_alpha=32", "train.lora_dropout=0.0", "train.max_length=512",
            "train.sft_weight=0.0"]  # plain DPO, as TRL's DPOTrainer runs it
    if args.sft:
        sets.append("train.loss=sft")
    cfg = config.build(sets=sets).train
    gflops = bound.matmul_gflops()
    weights = bound.linear_weights(model)
    reference_tokens = 0 if args.sft else tokens // args.epochs
    flop_per_token = (4 * weights * tokens + 2 * weights * reference_tokens) / tokens
    print(f"{'SFT on ' if args.sft else ''}{args.pairs} pairs, {tokens} tokens per run "
          "(prompt counted with each response), "
          f"batch {args.batch_size}, {args.epochs} epoch(s); matmul {gflops:.0f} GFLOP/s, "
          f"{flop_per_token / 1e6:.0f} MFLOP per token")

    from selfalign.process import peak_memory_mib, reset_peak_memory, return_freed_memory

    def ours(name: str, *extra: str) -> float:
        losses = []
        lever = config.build(sets=sets + list(extra)).train
        return_freed_memory()  # the peak below is this run's own, not what an earlier run left in the heap
        reset_peak_memory()
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            train(model, TrainJob(examples, lever, out, pad_id=tok.pad_token_id, checkpoint_every=0),
                  on_step=losses.append)
            seconds = time.perf_counter() - start
        peak = peak_memory_mib()
        print(f"ours, {name}: {seconds:7.1f} s = {tokens / seconds:6.1f} tok/s, "
              f"{bound.share(tokens / seconds, flop_per_token, gflops)}, "
              f"loss {losses[0].loss:.4f} -> {losses[-1].loss:.4f}, peak memory {peak or 0:.0f} MiB", flush=True)
        return seconds

    if args.sft:  # one sequence per example: nothing to pack
        ours_s = ours(f"SFT, micro-batches of {cfg.micro_batch_tokens} tokens (the default)")
        if args.skip_trl:
            return
        return trl_run(args, rows, tok, model, cfg, tokens, flop_per_token, gflops, ours_s)
    padded_s = ours("padded, micro-batches of 2048 tokens", "train.packing=false", "train.micro_batch_tokens=2048")
    large_s = ours("packed, micro-batches of 2048 tokens", "train.micro_batch_tokens=2048")
    ours_s = ours(f"packed, micro-batches of {cfg.micro_batch_tokens} tokens (the default)")
    print(f"lever packing (at 2048): {padded_s / large_s:.2f}x; lever micro-batches of {cfg.micro_batch_tokens} "
          f"instead of 2048: {large_s / ours_s:.2f}x")
    if args.skip_trl:
        return
    trl_run(args, rows, tok, model, cfg, tokens, flop_per_token, gflops, ours_s)


def trl_run(args, rows, tok, model, cfg, tokens, flop_per_token, gflops, ours_s) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(cfg.lora_targets),
                      task_type="CAUSAL_LM")
    if args.sft:
        with tempfile.TemporaryDirectory() as out:
            trl_args = SFTConfig(output_dir=out, per_device_train_batch_size=args.batch_size,
                                 num_train_epochs=args.epochs, learning_rate=5e-5, bf16=False, fp16=False,
                                 gradient_checkpointing=False, logging_steps=1, report_to=[], save_strategy="no",
                                 max_length=512, use_cpu=True, dataloader_num_workers=0, seed=0, packing=False,
                                 completion_only_loss=True)
            data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])
            trainer = SFTTrainer(model=model, args=trl_args, train_dataset=data, processing_class=tok,
                                 peft_config=lora)
            start = time.perf_counter()
            trainer.train()
            trl_s = time.perf_counter() - start
        report("TRL SFTTrainer", trl_s, trainer, tokens, flop_per_token, gflops, ours_s)
        return

    with tempfile.TemporaryDirectory() as out:
        trl_args = DPOConfig(output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
                             learning_rate=5e-5, bf16=False, fp16=False, gradient_checkpointing=False, beta=0.1,
                             logging_steps=1, report_to=[], save_strategy="no", max_length=512, use_cpu=True,
                             dataloader_num_workers=0, seed=0)
        trainer = DPOTrainer(model=model, args=trl_args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=lora)
        start = time.perf_counter()
        trainer.train()
        trl_s = time.perf_counter() - start
    report("TRL DPOTrainer", trl_s, trainer, tokens, flop_per_token, gflops, ours_s)


def report(name, trl_s, trainer, tokens, flop_per_token, gflops, ours_s) -> None:
    import bound

    trl_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"{name}: {trl_s:7.1f} s = {tokens / trl_s:6.1f} tok/s, "
          f"{bound.share(tokens / trl_s, flop_per_token, gflops)}, loss {trl_losses[0]:.4f} -> {trl_losses[-1]:.4f}")
    print(f"ratio ours / TRL: {trl_s / ours_s:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
