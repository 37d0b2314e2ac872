"""Data-parallel training: N processes (train.processes) against one process, same pairs, same steps.

One process trains with batch b and grad_accum N; N processes with batch b each take the same
optimizer steps (the equivalence is tested in tests/test_distributed.py), so the wall times compare
like for like. Wall time includes starting the processes and loading the model in each. On a
machine with N GPUs this is the multi-GPU speed-up; on a CPU the cores are split between the
processes (OMP threads = cores / N), so expect little gain there: it measures the overhead.
Run: .venv/bin/python benchmarks/train_processes.py [--processes 2] [--pairs 64] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--launcher", default="accelerate", choices=("accelerate", "torchrun"))
    args = parser.parse_args()

    from selfalign import config, models
    from selfalign.training import distributed
    from selfalign.training.trainer import Example, TrainJob, train

    model, tok = models.load(args.model)
    rng = random.Random(0)
    vocab = list(range(200, min(tok.vocab_size, 20000)))

    def ids(n: int) -> list[int]:
        return [rng.choice(vocab) for _ in range(n)]

    examples = [Example(ids(64), ids(128), ids(128)) for _ in range(args.pairs)]
    tokens = sum(len(e.prompt) * 2 + len(e.chosen) + len(e.rejected) for e in examples)
    sets = [f"model.name={args.model}", f"train.batch_size={args.batch_size}", "train.epochs=1",
            "train.lora_dropout=0.0", f"train.launcher=\"{args.launcher}\""]
    one = config.build(sets=sets + [f"train.grad_accum={args.processes}"])
    many = config.build(sets=sets + [f"train.processes={args.processes}"])
    print(f"{args.pairs} pairs, {tokens} tokens, batch {args.batch_size} per process, "
          f"{args.processes} micro-batches per optimizer step")

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        single_steps = []
        train(model, TrainJob(examples, one.train, out, pad_id=tok.pad_token_id, checkpoint_every=0),
              on_step=single_steps.append)
        one_s = time.perf_counter() - start
    print(f"1 process:   {one_s:7.1f} s = {tokens / one_s:6.1f} tok/s, loss {single_steps[-1].loss:.4f}")
    del model

    with tempfile.TemporaryDirectory() as out:
        folder = distributed.write_job(Path(out) / "job", examples, many, seed=0, out_dir=Path(out),
                                       init_adapter=None, reference_adapter=None)
        steps = []
        start = time.perf_counter()
        distributed.launch(folder, many, on_step=steps.append, should_stop=lambda: False,
                           log_path=Path(out) / "log.txt")
        many_s = time.perf_counter() - start
    print(f"{args.processes} processes: {many_s:7.1f} s = {tokens / many_s:6.1f} tok/s, loss {steps[-1].loss:.4f} "
          f"(start-up and model loading included)")
    print(f"ratio {args.processes} processes / 1 process: {one_s / many_s:.2f}x")


if __name__ == "__main__":
    main()
