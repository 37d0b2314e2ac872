"""Peak memory of a whole default round on the embedded model, stage by stage.

Runs `selfalign init` and `selfalign run --headless --rounds 1` (round 0's evaluation, then round 1; see --rounds)
in a temporary runs folder, with the default recipe except fewer training prompts (the peak is set by
batch shapes, which 64 prompts x 4 samples and the 150 held-out prompts keep full, not by how many
batches a stage runs). The loop logs each stage's own peak resident memory (the kernel's high-water
mark, reset at the stage's start); this prints them with the stage's time, the largest of them (the
run's peak), and the ratios to the 4 GB target.

--rounds 2 runs a second round too: it samples through the first round's adapter, in a process that has
trained and evaluated already, which is how every round of a real run after the first is taken.

Run: .venv/bin/python benchmarks/round_memory.py [--prompts 64] [--eval-prompts N] [--rounds 1]
     [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

TARGET_MIB = 4 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=64, help="instruct.prompts_per_round (default 240)")
    parser.add_argument("--eval-prompts", type=int, default=None,
                        help="eval.prompts (default: the config's 150; fewer leave the batch part empty)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds to run (2: one more, from an adapter)")
    parser.add_argument("--set", action="append", default=[], help="more settings, KEY=VALUE")
    args = parser.parse_args()
    sets = [f"model.name={args.model}", f"instruct.prompts_per_round={args.prompts}", f"run.rounds={args.rounds}",
            *args.set]
    if args.eval_prompts is not None:
        sets.append(f"eval.prompts={args.eval_prompts}")
    from gain import selfalign  # runs one command; a failure ends the benchmark with its one-line error

    with tempfile.TemporaryDirectory() as runs:
        env = {**os.environ, "SELFALIGN_RUNS": runs}
        selfalign("init", "bench", *[item for s in sets for item in ("--set", s)], env=env, capture=True)
        start = time.perf_counter()
        # its progress lines show on stderr
        selfalign("run", "bench", "--headless", "--rounds", str(args.rounds), env=env)
        seconds = time.perf_counter() - start
        records = [json.loads(line) for log in sorted(Path(runs, "bench", "logs").glob("*.jsonl"))
                   for line in log.read_text().splitlines()]
    print(f"{args.rounds} round(s), {args.model}, settings: {' '.join(sets)}")
    peaks = []
    for record in records:
        peak = record.get("peak_rss_mib")
        if peak:
            peaks.append(peak)
            took = record["message"][len("done in "):].split(",")[0]
            print(f"round {record['round']} {record['stage']:9s} {took:>9s}"
                  f"   peak {peak:6.0f} MiB  ({peak / TARGET_MIB:.2f}x the 4 GB target)")
    # the largest stage peak is the run's peak (getrusage's maxrss is no use here: the resets lower it too)
    top = max(peaks, default=0.0)
    print(f"whole run: {seconds / 60:.1f} min, peak {top:.0f} MiB ({top / TARGET_MIB:.2f}x the 4 GB target)")


if __name__ == "__main__":
    main()
