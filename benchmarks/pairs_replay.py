"""Replay a round's pairs stage under other settings, without training: what the pairs would be made of.

A pair rule changes what a round learns from; its gain takes a round of training to measure, but its
make-up can be read in seconds from the samples and verifications a run already stored. This copies
the run's database (SQLite backup: consistent while the run is going), rebuilds round K's pairs in the
copy once with the run's own settings and once per --set given, and prints for each: pairs, the chosen
and rejected answers' median and mean length, the share of pairs whose chosen answer is the longer, and
the rejected answers that finished cleanly, were cut off by the token budget, or looped.

    .venv/bin/python benchmarks/pairs_replay.py --run default-v3 --round 1 --set pairs.tie_break=longer
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
from pathlib import Path


def make_up(store, k: int) -> str:
    from selfalign import verifiers

    pairs = [p for p in store.pairs(k) if p.rejected_id is not None]
    if not pairs:
        return "no pairs"
    responses = {r.id: r for r in store.responses(round=k)}
    chosen = [p.scores["chosen"]["tokens"] for p in pairs]
    rejected = [p.scores["rejected"]["tokens"] for p in pairs]
    kinds = {"clean": 0, "cut off": 0, "loop": 0}
    for p in pairs:
        r = responses[p.rejected_id]
        kinds["loop" if verifiers.degenerate(r.text) else "cut off" if r.finish_reason == "length" else "clean"] += 1
    longer = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)
    return (f"{len(pairs)} pairs; chosen median {statistics.median(chosen):.0f} (mean {statistics.mean(chosen):.0f}) "
            f"tokens, rejected median {statistics.median(rejected):.0f} (mean {statistics.mean(rejected):.0f}); "
            f"chosen longer in {longer:.0%}; rejected: " + ", ".join(f"{n} {v}" for n, v in kinds.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--runs-dir", default=None, help="where runs live (default: SELFALIGN_RUNS or ./runs)")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting to replay (each one alone against the run's own settings)")
    args = parser.parse_args()

    from selfalign import config
    from selfalign.stages import StageContext, pairs
    from selfalign.store import open_store

    folder = Path(args.runs_dir or os.environ.get("SELFALIGN_RUNS") or "runs") / args.run
    if not (folder / "selfalign.db").is_file():
        raise SystemExit(f"no run {args.run} in {folder.parent}; pass --runs-dir or set SELFALIGN_RUNS")
    own = config.load(folder / "config.toml")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "selfalign.db"
        with sqlite3.connect(folder / "selfalign.db") as source, sqlite3.connect(copy) as target:
            source.backup(target)
        for label, sets in [("the run's own settings", [])] + [(item, [item]) for item in args.sets]:
            cfg = config.load(folder / "config.toml", sets=sets) if sets else own
            with open_store(copy) as store:
                if not store.round_verifications(args.round):
                    raise SystemExit(f"round {args.round} of {args.run} has no verified samples yet")
                # the policy that sampled the round (an adapter's label from round 2 on): pairs take its answers
                policy = store.db.execute("SELECT policy FROM responses WHERE round = ? GROUP BY policy "
                                          "ORDER BY count(*) DESC LIMIT 1", (args.round,)).fetchone()
                pairs.run(StageContext(cfg, store, None, args.round, policy=policy[0] if policy else "base",
                                       progress=lambda *a: None))
                print(f"{label}: {make_up(store, args.round)}")


if __name__ == "__main__":
    main()
