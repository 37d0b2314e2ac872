"""Answers that say nothing of their own: how many held-out answers are hollow or echo the prompt.

An answer is hollow (verifiers.hollow) when, with its [placeholders] and the words its constraints supply
(end phrase, start word, keywords, markers) taken out, it holds at most verifiers.HOLLOW_WORDS distinct
words ("Hope this helps." to a prompt asking to end so, "*highlight* *text*", "[address] [name]"): the
verifiers pass it, a reader learns nothing. It echoes (verifiers.echo) when every word of it is a word of
the prompt as the policy saw it and all but HOLLOW_WORDS are one run copied from it (the input list of a
"classify these" prompt handed back, a constraint's sentence read back). An echo of lower-case input is
also counted as lower case nobody asked for, so the table shows that share with and without echoes. The
held-out figures (selfalign eval, benchmarks/gain.py) carry the hollow and echo shares for the rounds they
answer; this reads a run's stored held-out answers and prints them for every round and split, the loop's
own 150-prompt dev samples included.

    .venv/bin/python benchmarks/hollow.py /root/gain-runs/mirror3 [/root/gain-runs/formgate3 ...]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from selfalign import verifiers
from selfalign.verifiers import forms

SPLITS = {"heldout": "dev", "test": "test"}  # prompts.source of the held-out answers -> split name


def shares(run_dir: Path) -> dict[tuple[int, str], dict[str, float]]:
    """(round, split) -> answers and the hollow, echo, unasked lower-case and non-echo lower-case shares."""
    db = sqlite3.connect(f"file:{run_dir / 'selfalign.db'}?mode=ro", uri=True)
    rows = db.execute("SELECT r.round, p.source, p.text, p.constraints, r.text FROM responses r "
                      "JOIN prompts p ON p.id = r.prompt_id WHERE r.kind = 'eval' AND p.split = 'heldout'").fetchall()
    seen: dict[tuple[int, str], list[tuple[bool, bool, bool]]] = {}
    for k, source, prompt, constraints, text in rows:
        constraints = json.loads(constraints)
        lower = "lowercase" in forms.unasked_marked(constraints, text)
        seen.setdefault((k, SPLITS.get(source, source)), []).append(
            (verifiers.hollow(constraints, text), verifiers.echo(verifiers.attach(prompt, constraints), text), lower))
    out = {}
    for key, flags in sorted(seen.items()):
        n = len(flags)
        out[key] = {"n": n, "hollow": sum(h for h, _, _ in flags) / n, "echo": sum(e for _, e, _ in flags) / n,
                    "lower": sum(low for _, _, low in flags) / n,
                    "lower_not_echo": sum(low and not e for _, e, low in flags) / n}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each holding selfalign.db)")
    args = parser.parse_args()
    print(f"| run | round | split | answers | hollow (<= {verifiers.HOLLOW_WORDS} words of its own) | echo "
          "| lower case unasked | of which not an echo |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        for (k, split), s in shares(run).items():
            # a round the benchmark did not answer whole shows the loop's own 150-prompt dev sample
            print(f"| {run.name} | {k} | {split} | {s['n']} | {100 * s['hollow']:.1f} % | {100 * s['echo']:.1f} % "
                  f"| {100 * s['lower']:.1f} % | {100 * s['lower_not_echo']:.1f} % |")


if __name__ == "__main__":
    main()
