"""Build prompts/heldout.jsonl, the held-out instruction-following benchmark, from its task texts.

The task texts (written for this project) are the source; this script gives each one 1-3 compatible
verifiable constraints in the held-out wordings (h0, h1: sentences training never uses), balances the
constraint types so each appears at least MIN_PER_TYPE times, drops tasks that are near-duplicates
(ROUGE-L above 0.7) of a seed task or of each other, and writes the prompts in a fixed shuffled order,
so the first N (the loop's per-round sample, eval.prompts) are a fair sample of the whole.

    .venv/bin/python benchmarks/build_heldout.py [--add tasks.tsv]

--add appends new tasks (one per line: category<TAB>instruction) before rebuilding. Running it again
on its own output gives the same file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from selfalign import verifiers
from selfalign.rouge import RougeIndex

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
SEED = 20261125
MIN_PER_TYPE = 20
CONSTRAINT_COUNTS = (1, 2, 3)
COUNT_WEIGHTS = (0.4, 0.35, 0.25)


def build(tasks: list[dict], seeds: list[str]) -> tuple[list[dict], list[str]]:
    """(benchmark rows, dropped task texts with the reason)."""
    index = RougeIndex()
    for text in seeds:
        index.add(text)
    kept, dropped, seen = [], [], set()
    for task in sorted(tasks, key=lambda t: t["prompt"]):
        text = task["prompt"].strip()
        if text in seen or index.is_near_duplicate(text, 0.7):
            dropped.append(text)
            continue
        seen.add(text)
        index.add(text)
        kept.append({"prompt": text, "category": task["category"]})
    rng = random.Random(SEED)
    rng.shuffle(kept)
    counts: Counter[str] = Counter()
    for row in kept:
        # Types seen least so far are drawn more, so every type ends well above MIN_PER_TYPE.
        weights = {cid: 1.0 / (1 + counts[cid]) ** 2 for cid in verifiers.REGISTRY}
        how_many = rng.choices(CONSTRAINT_COUNTS, weights=COUNT_WEIGHTS)[0]
        row["constraints"] = verifiers.sample(rng, how_many, weights, split="heldout")
        counts.update(c["id"] for c in row["constraints"])
    short = [cid for cid in verifiers.REGISTRY if counts[cid] < MIN_PER_TYPE]
    if short:
        raise SystemExit(f"constraint types below {MIN_PER_TYPE} uses: {short}; add tasks or change SEED")
    return kept, dropped


def read_tasks(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--add", type=Path, help="tab-separated file of new tasks: category<TAB>instruction")
    parser.add_argument("--out", type=Path, default=PROMPTS / "heldout.jsonl")
    args = parser.parse_args()
    tasks = read_tasks(args.out)
    if args.add:
        for line in args.add.read_text(encoding="utf-8").splitlines():
            if line.strip():
                category, text = line.split("\t", 1)
                tasks.append({"prompt": text.strip(), "category": category.strip()})
    seeds = [row["instruction"] for row in read_tasks(PROMPTS / "seed_tasks.jsonl")]
    rows, dropped = build(tasks, seeds)
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    args.out.write_text(body, encoding="utf-8")
    types = Counter(c["id"] for row in rows for c in row["constraints"])
    sizes = Counter(len(row["constraints"]) for row in rows)
    print(f"{len(rows)} prompts ({len(dropped)} dropped: near-duplicates of a seed task or of each other); "
          f"constraints per prompt {dict(sorted(sizes.items()))}; per type min {min(types.values())}, "
          f"max {max(types.values())}; sha256 {hashlib.sha256(body.encode()).hexdigest()[:12]}")
    for text in dropped:
        print(f"  dropped: {text}")


if __name__ == "__main__":
    main()
