"""Paired difference of two runs' rounds on the same held-out prompts, with 95 % bootstrap intervals.

Two gain rows are separate runs, so their prompt ids differ; the held-out benchmark is the same file, so
the answers are matched by prompt text. This says whether one row beat another on the same prompts, which
their two intervals over round 0 cannot (docs/gain.md, row rdpoloop3-2pairs):

    .venv/bin/python benchmarks/runs_gain.py --runs-dir /root/gain-runs rdpoloop3:3 rdpoloop3-2pairs:3

Both rounds need answers to the whole benchmark (`gain.py` gives them). `selfalign compare A B --round K`
shows the same pairing for one round number on both runs. Round 0 of two runs of the same
model should differ by exactly 0: a quick check that the two runs answered the same benchmark.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def answers_by_text(runs_dir: Path, spec: str) -> dict:
    from selfalign import heldout
    from selfalign.store import open_store

    name, _, k = spec.rpartition(":")
    if not name or not k.isdigit():
        sys.exit(f"runs_gain: '{spec}' is not RUN:ROUND (for example rdpoloop3:3)")
    db = runs_dir / name / "selfalign.db"
    if not db.exists():
        sys.exit(f"runs_gain: no run '{name}' under {runs_dir}: pass --runs-dir where it lives")
    store = open_store(db)
    try:
        found = heldout.answers(store, int(k))  # every held-out prompt the round answered
        prompts = store.prompts_by_id(found)
    finally:
        store.close()
    return {prompts[i].text: answer for i, answer in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="RUN:ROUND, the baseline")
    parser.add_argument("after", help="RUN:ROUND, compared with it")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    args = parser.parse_args()

    from selfalign import heldout

    before, after = answers_by_text(args.runs_dir, args.before), answers_by_text(args.runs_dir, args.after)
    gain = heldout.gain_figures(before, after)  # keyed by prompt text: the same prompts on both sides
    if not gain["n"]:
        sys.exit("runs_gain: the two rounds share no answered held-out prompt: evaluate both on the whole "
                 "benchmark first (benchmarks/gain.py --run NAME --skip-loop)")
    print(f"{args.after} against {args.before}: {gain['n']} held-out prompts answered by both "
          f"({len(before)} and {len(after)} in all)")
    for key, label in (("csr_prompt", "prompt-level"), ("csr_instruction", "instruction-level")):
        print(f"  {label}: {gain[key].fmt(100, 1, signed=True)} points")


if __name__ == "__main__":
    main()
