"""LoRA-DPO training throughput: selfalign's trainer versus TRL's DPOTrainer, same data, one process.

64 preference pairs (prompt about 64 tokens, responses about 128), LoRA r=16 on every linear
projection, batch size 8, one epoch, fp32, gradient checkpointing off (TRL's fastest settings on a
CPU; its defaults, bf16 and checkpointing, are far slower here). Tokens counted: prompt + chosen +
rejected of every pair per epoch, over the whole wall time of each trainer (reference log-probs
included). Target: ours >= 2x TRL, with a comparable final loss.
Needs the benchmark extra: pip install -e '.[bench]'
Run: .venv/bin/python benchmarks/train.py [--pairs 64] [--epochs 1] [--model smollm2-135m]
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
    args = parser.parse_args()

    from selfalign import config, models
    from selfalign.training.trainer import Example, train

    model, tok = models.load(args.model, device="cpu")
    rng = random.Random(0)
    vocab = [i for i in range(200, min(tok.vocab_size, 20000))]

    def text(n: int) -> str:
        return tok.decode([rng.choice(vocab) for _ in range(n)])

    rows = [{"prompt": text(64), "chosen": text(128), "rejected": text(128)} for _ in range(args.pairs)]
    examples = [Example(tok(r["prompt"], add_special_tokens=False)["input_ids"],
                        tok(r["chosen"], add_special_tokens=False)["input_ids"],
                        tok(r["rejected"], add_special_tokens=False)["input_ids"]) for r in rows]
    tokens = sum(len(e.prompt) * 2 + len(e.chosen) + len(e.rejected) for e in examples) * args.epochs
    cfg = config.build(sets=[f"train.batch_size={args.batch_size}", f"train.epochs={args.epochs}",
                             "train.learning_rate=5e-5", "train.lora_r=16", "train.lora_alpha=32",
                             "train.lora_dropout=0.0", "train.max_length=512",
                             "train.sft_weight=0.0"]).train  # plain DPO, as TRL's DPOTrainer runs it
    print(f"{args.pairs} pairs, {tokens} tokens per run (prompt counted with each response), "
          f"batch {args.batch_size}, {args.epochs} epoch(s)")

    losses = []
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train(model, examples, cfg, out, pad_id=tok.pad_token_id, on_step=losses.append, checkpoint_every=0)
        ours_s = time.perf_counter() - start
    print(f"ours: {ours_s:7.1f} s = {tokens / ours_s:6.1f} tok/s, loss {losses[0].loss:.4f} -> {losses[-1].loss:.4f}")

    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    with tempfile.TemporaryDirectory() as out:
        trl_args = DPOConfig(output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
                             learning_rate=5e-5, bf16=False, fp16=False, gradient_checkpointing=False, beta=0.1,
                             logging_steps=1, report_to=[], save_strategy="no", max_length=512, use_cpu=True,
                             dataloader_num_workers=0, seed=0)
        trainer = DPOTrainer(model=model, args=trl_args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                    target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))
        start = time.perf_counter()
        trainer.train()
        trl_s = time.perf_counter() - start
    trl_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"TRL:  {trl_s:7.1f} s = {tokens / trl_s:6.1f} tok/s, loss {trl_losses[0]:.4f} -> {trl_losses[-1]:.4f}")
    print(f"ratio ours / TRL: {trl_s / ours_s:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
