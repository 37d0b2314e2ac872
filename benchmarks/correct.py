"""Corrector benchmark (Aligner): does a corrector trained on a run's own stored data fix more than it breaks?

For a finished run with held-out answers stored (what `benchmarks/gain.py` leaves), it trains round K's corrector
(`selfalign correct RUN --round K`: a LoRA on the triples of rounds 1..K) and applies it to the test split's
answers of round K (the policy it learned beside) and of round 0 (the base model: another upstream policy),
then the dev split's. Per (answers round, split) it prints, paired on the same prompts with 95 % bootstrap
intervals, prompt-level satisfaction of the policy alone, policy + rule repair, policy + corrector and both;
fix rate, break rate, no-op, echo, gutted, looped and added-form shares over all answers, over the failing ones
and over the prompts with a content constraint (keywords, min_words, frequency, placeholders: what rule repair
cannot touch); the correction / answer length ratio; and per constraint type what it fixed and broke.

    .venv/bin/python benchmarks/correct.py --runs-dir /root/gain-runs --run formgate3 --round 3

Resumable: corrections are stored in the run's database as they come (kind 'correction'), the corrector once
trained is reused, so the same command goes on where a stopped one ended. Figures go to
benchmarks/results/correct-RUN-kK.{md,json} after every step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def measure(run: str, k: int, answers_round: int, split: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "selfalign", "correct", run, "--round", str(k), "--heldout", split,
                          "--answers-round", str(answers_round), "--format", "json"],
                         env=env, text=True, stdout=subprocess.PIPE)
    if out.returncode != 0:
        raise SystemExit(f"`selfalign correct {run} ...` failed with exit code {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished run with held-out answers stored")
    parser.add_argument("--round", type=int, required=True, help="the corrector's round (trained on rounds 1..K)")
    parser.add_argument("--runs-dir", default=None, help="folder of run folders (default: SELFALIGN_RUNS or ./runs)")
    parser.add_argument("--splits", default="test,dev", help="which splits, in order (default: test,dev)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.runs_dir:
        env["SELFALIGN_RUNS"] = args.runs_dir
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"correct-{args.run}-k{args.round}"
    sections, data = [], {}
    for split in args.splits.split(","):
        for answers_round in (args.round, 0):
            print(f"round {args.round}'s corrector on round {answers_round}'s {split} answers", file=sys.stderr)
            result = measure(args.run, args.round, answers_round, split, env)
            sections.append(result["markdown"].strip())
            data[f"{split}/r{answers_round}"] = result["figures"]
            command = (f"`.venv/bin/python benchmarks/correct.py --run {args.run} --round {args.round}` "
                       f"(runs folder {args.runs_dir or 'default'})")
            stem.with_suffix(".md").write_text(f"## Corrector benchmark: {args.run}, round {args.round}\n\n"
                                               f"{command}\n\n" + "\n\n".join(sections) + "\n")
            stem.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
