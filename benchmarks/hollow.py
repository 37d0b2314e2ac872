"""Hollow answers: how many held-out answers meet a form and say nothing.

An answer is hollow (verifiers.hollow) when, with its [placeholders] and the words its constraints supply
(end phrase, start word, keywords, markers) taken out, it holds at most verifiers.HOLLOW_WORDS distinct
words ("Hope this helps." to a prompt asking to end so, "*highlight* *text*", "[address] [name]"): the
verifiers pass it, a reader learns nothing. The held-out figures (selfalign eval, benchmarks/gain.py) carry
the share for the rounds they answer; this reads a run's stored held-out answers and prints it for every
round and split, the loop's own 150-prompt dev samples included.

    .venv/bin/python benchmarks/hollow.py /root/gain-runs/mirror3 [/root/gain-runs/formgate3 ...]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from selfalign import verifiers

SPLITS = {"heldout": "dev", "test": "test"}  # prompts.source of the held-out answers -> split name


def shares(run_dir: Path) -> dict[tuple[int, str], tuple[float, int]]:
    """(round, split) -> (hollow share, answers) over the run's stored held-out answers."""
    db = sqlite3.connect(f"file:{run_dir / 'selfalign.db'}?mode=ro", uri=True)
    rows = db.execute("SELECT r.round, p.source, p.constraints, r.text FROM responses r "
                      "JOIN prompts p ON p.id = r.prompt_id WHERE r.kind = 'eval' AND p.split = 'heldout'").fetchall()
    seen: dict[tuple[int, str], list[bool]] = {}
    for k, source, constraints, text in rows:
        seen.setdefault((k, SPLITS.get(source, source)), []).append(verifiers.hollow(json.loads(constraints), text))
    return {key: (sum(v) / len(v), len(v)) for key, v in sorted(seen.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each holding selfalign.db)")
    args = parser.parse_args()
    print(f"| run | round | split | answers | hollow (<= {verifiers.HOLLOW_WORDS} words of its own) |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        for (k, split), (share, n) in shares(run).items():
            # a round the benchmark did not answer whole shows the loop's own 150-prompt dev sample
            print(f"| {run.name} | {k} | {split} | {n} | {100 * share:.1f} % |")


if __name__ == "__main__":
    main()
