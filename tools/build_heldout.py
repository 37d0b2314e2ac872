"""Build the held-out benchmark's two splits from their task texts: prompts/heldout.jsonl (dev: the loop's
sample, the controller and every ablation read it) and prompts/test.jsonl (test: only `selfalign eval
--split test` reads it; the reported headline comes from it and nothing is tuned on it).

The task texts (written for this project) are the source; this script gives each one 1-3 compatible
verifiable constraints in the held-out wordings (h0, h1: sentences training never uses), balances the
constraint types so each appears at least MIN_PER_TYPE times, drops tasks that are near-duplicates
(ROUGE-L above 0.7) of a seed task, of a training task, of the other split or of each other, and writes
the prompts in a fixed shuffled order, so the first N (the loop's per-round sample, eval.prompts) are a
fair sample of the whole. Plain prompts (no constraint: the clearest view of a habit the loop taught,
verifiers/forms.py) follow the constrained ones and never change them.

    .venv/bin/python tools/build_heldout.py [--split dev|test] [--add tasks.tsv] [--plain tasks.tsv]

--add appends new tasks (one per line: category<TAB>instruction) before rebuilding; --plain appends tasks
that get no constraint. Running it again on its own output gives the same file.
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
SPLITS = {"dev": ("heldout.jsonl", 20261125), "test": ("test.jsonl", 20261207)}  # file, shuffling seed
SEED = SPLITS["dev"][1]
MIN_PER_TYPE = 20
CONSTRAINT_COUNTS = (1, 2, 3)
COUNT_WEIGHTS = (0.4, 0.35, 0.25)


def build(tasks: list[dict], seeds: list[str], seed: int = SEED) -> tuple[list[dict], list[str]]:
    """(benchmark rows, dropped task texts): `seeds` are the texts no task may be near (seed tasks,
    training tasks, the other split)."""
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
    rng = random.Random(seed)
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


def add_plain(rows: list[dict], plain: list[dict], seeds: list[str]) -> tuple[list[dict], list[str]]:
    """Constraint-free rows for `plain` tasks, after the constrained `rows` (which stay as they are), minus
    near-duplicates of anything in `seeds`, `rows` or each other."""
    index = RougeIndex()
    for text in seeds + [row["prompt"] for row in rows]:
        index.add(text)
    kept, dropped = [], []
    for task in plain:
        text = task["prompt"].strip()
        if index.is_near_duplicate(text, 0.7):
            dropped.append(text)
            continue
        index.add(text)
        kept.append({"prompt": text, "category": task["category"], "constraints": []})
    return kept, dropped


def split_texts(split: str) -> list[str]:
    """Every task text of a split as it stands (for the other split's overlap check)."""
    path = PROMPTS / SPLITS[split][0]
    return [row["prompt"] for row in read_tasks(path)] if path.exists() else []


def forbidden_texts(split: str) -> list[str]:
    """Texts a split's tasks must not be near: seed tasks, training tasks, and the other split."""
    other = "test" if split == "dev" else "dev"
    return ([row["instruction"] for row in read_tasks(PROMPTS / "seed_tasks.jsonl")]
            + [row["instruction"] for row in read_tasks(PROMPTS / "train_tasks.jsonl")] + split_texts(other))


def read_tsv(path: Path) -> list[dict]:
    tasks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            category, text = line.split("\t", 1)
            tasks.append({"prompt": text.strip(), "category": category.strip()})
    return tasks


def read_tasks(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="dev")
    parser.add_argument("--add", type=Path, help="tab-separated file of new tasks: category<TAB>instruction")
    parser.add_argument("--plain", type=Path, help="tab-separated file of new tasks that get no constraint")
    args = parser.parse_args()
    out = PROMPTS / SPLITS[args.split][0]
    existing = read_tasks(out) if out.exists() else []
    tasks = [row for row in existing if row.get("constraints")]
    plain = [row for row in existing if not row.get("constraints")]
    tasks += read_tsv(args.add) if args.add else []
    plain += read_tsv(args.plain) if args.plain else []
    forbidden = forbidden_texts(args.split)
    rows, dropped = build(tasks, forbidden, SPLITS[args.split][1])
    bare, dropped_bare = add_plain(rows, plain, forbidden)
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows + bare)
    out.write_text(body, encoding="utf-8")
    types = Counter(c["id"] for row in rows for c in row["constraints"])
    sizes = Counter(len(row["constraints"]) for row in rows)
    print(f"{out.name}: {len(rows)} prompts with constraints and {len(bare)} without ({len(dropped)} + "
          f"{len(dropped_bare)} dropped: near-duplicates of a seed or training task, of the other split or of each "
          f"other); constraints per prompt {dict(sorted(sizes.items()))}; per type min {min(types.values())}, "
          f"max {max(types.values())}; sha256 {hashlib.sha256(body.encode()).hexdigest()[:12]}")
    for text in dropped + dropped_bare:
        print(f"  dropped: {text}")


if __name__ == "__main__":
    main()
