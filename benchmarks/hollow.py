"""Hollow answers: how many held-out answers meet a form and say nothing.

An answer is hollow when, with its [placeholders] taken out, it holds at most HOLLOW_WORDS distinct words
("*important* *important* *important*", "[address] [name] [quantity]"): verifiers for highlights,
placeholders, lower case or "no commas" pass it, a reader learns nothing. The gain benchmark counts loops
and cut-offs (degenerate, truncated) but not this, so this reads a run's stored held-out answers (what
`benchmarks/gain.py` and `selfalign eval` answered) and prints the share per round and split.

    .venv/bin/python benchmarks/hollow.py /root/gain-runs/mirror3 [/root/gain-runs/formgate3 ...]
"""

from __future__ import annotations

import argparse
import re
import sqlite3
from pathlib import Path

HOLLOW_WORDS = 3
PLACEHOLDER = re.compile(r"\[[^\[\]\n]*\]")
SPLITS = {"heldout": "dev", "test": "test"}  # prompts.source of the held-out answers -> split name


def hollow(text: str) -> bool:
    from selfalign.verifiers.library import words

    return len({w.lower() for w in words(PLACEHOLDER.sub(" ", text))}) <= HOLLOW_WORDS


def shares(run_dir: Path) -> dict[tuple[int, str], tuple[float, int]]:
    """(round, split) -> (hollow share, answers) over the run's stored held-out answers."""
    db = sqlite3.connect(f"file:{run_dir / 'selfalign.db'}?mode=ro", uri=True)
    rows = db.execute("SELECT r.round, p.source, r.text FROM responses r JOIN prompts p ON p.id = r.prompt_id "
                      "WHERE r.kind = 'eval' AND p.split = 'heldout'").fetchall()
    seen: dict[tuple[int, str], list[bool]] = {}
    for k, source, text in rows:
        seen.setdefault((k, SPLITS.get(source, source)), []).append(hollow(text))
    return {key: (sum(v) / len(v), len(v)) for key, v in sorted(seen.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each holding selfalign.db)")
    args = parser.parse_args()
    print(f"| run | round | split | answers | hollow (<= {HOLLOW_WORDS} distinct words outside [placeholders]) |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        for (k, split), (share, n) in shares(run).items():
            # a round the benchmark did not answer whole shows the loop's own 150-prompt dev sample
            print(f"| {run.name} | {k} | {split} | {n} | {100 * share:.1f} % |")


if __name__ == "__main__":
    main()
