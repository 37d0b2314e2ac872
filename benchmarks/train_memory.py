"""Peak memory and speed of one training round under different activation-memory settings.

Each setting trains in its own process (peak RSS is per process) on the same pairs: batch 8,
prompts of 64 tokens, responses of 192 (--prompt-tokens, --response-tokens), LoRA r=16 on every
projection, one epoch, fp32 on CPU.
Settings: the whole batch at once (baseline), train.micro_batch_tokens at 2048 and 512 (the default), and
gradient checkpointing. Prints peak RSS, tokens/s and the final loss (the same steps are taken
in every setting, so the losses should agree), with ratios against the baseline.
Run: .venv/bin/python benchmarks/train_memory.py [--pairs 32] [--model smollm2-135m] [--response-tokens 320]
     [--only "micro_batch_tokens=512 (default)"] [--set train.lora_dropout=0.05]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "whole batch": ["train.micro_batch_tokens=0"],
    "micro_batch_tokens=2048": ["train.micro_batch_tokens=2048"],
    "micro_batch_tokens=512 (default)": ["train.micro_batch_tokens=512"],
    "gradient checkpointing": ["train.micro_batch_tokens=0", "train.gradient_checkpointing=true"],
}


def child(model_name: str, pairs: int, prompt_tokens: int, response_tokens: int, sets: list[str]) -> None:
    import random

    from selfalign import config, models
    from selfalign.training.trainer import Example, TrainJob, train

    model, tok = models.load(model_name, device="cpu")
    rng = random.Random(0)

    def ids(n: int) -> list[int]:
        return [rng.randrange(5, min(len(tok), 20000)) for _ in range(n)]

    examples = [Example(ids(prompt_tokens), ids(response_tokens), ids(response_tokens)) for _ in range(pairs)]
    tokens = sum(len(e.prompt) * 2 + len(e.chosen) + len(e.rejected) for e in examples)
    cfg = config.build(sets=["train.batch_size=8", "train.epochs=1", "train.lora_dropout=0.0", *sets]).train
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    steps = []
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train(model, TrainJob(examples, cfg, out, pad_id=tok.pad_token_id, checkpoint_every=0), on_step=steps.append)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    after = _rss_mib()
    from selfalign.loop import return_freed_memory

    return_freed_memory()
    print(json.dumps({"peak_mib": peak / 1024, "loaded_mib": before / 1024, "tok_s": tokens / seconds,
                      "loss": steps[-1].loss, "after_mib": after, "trimmed_mib": _rss_mib()}))


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--response-tokens", type=int, default=192, help="tokens of each chosen and rejected answer")
    parser.add_argument("--only", action="append", choices=list(SETTINGS), help="run only this setting (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="a setting every row gets, KEY=VALUE")
    parser.add_argument("--child", nargs="*", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = ["--model", args.model, "--pairs", str(args.pairs), "--prompt-tokens", str(args.prompt_tokens),
             "--response-tokens", str(args.response_tokens)]
    if args.child is not None:
        child(args.model, args.pairs, args.prompt_tokens, args.response_tokens, args.child)
        return
    print(f"{args.pairs} pairs, batch 8, prompt {args.prompt_tokens} + responses {args.response_tokens} tokens, "
          f"{args.model}, one process per setting{'; ' + ' '.join(args.set) if args.set else ''}")
    results = {}
    for name in args.only or SETTINGS:
        done = subprocess.run([sys.executable, __file__, *shape, "--child", *SETTINGS[name], *args.set],
                              capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        base = results[next(iter(results))]
        r = results[name]
        print(f"{name:26s} peak {r['peak_mib']:7.0f} MiB (model loaded: {r['loaded_mib']:5.0f}), "
              f"{r['tok_s']:6.1f} tok/s, loss {r['loss']:.4f}; vs {next(iter(results))}: memory "
              f"{r['peak_mib'] / base['peak_mib']:.2f}x, speed {r['tok_s'] / base['tok_s']:.2f}x; after training "
              f"{r['after_mib']:.0f} MiB, {r['trimmed_mib']:.0f} MiB once freed memory is returned")


if __name__ == "__main__":
    main()
