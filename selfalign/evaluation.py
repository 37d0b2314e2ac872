"""`selfalign eval`: one round's policy on held-out prompts outside the loop, with a paired gain.

It shares the evaluate stage with the loop, so answers the loop already stored are not sampled again.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

from selfalign import config as config_mod
from selfalign import controller
from selfalign.engines import select
from selfalign.errors import UsageError
from selfalign.runs import RunFolder
from selfalign.stages import StageContext
from selfalign.store import open_store


@dataclass
class Evaluation:
    metrics: dict  # round k's metrics on the evaluated prompts
    round: int
    prompt_ids: list[int]  # the prompts evaluated (for intervals and paired gains)
    rounds: list[int]  # every round answered: k, and the round compared against


def evaluate_round(folder: RunFolder, round_k: int | None, prompt_file: str | None = None,
                   engine_factory: Callable = select.make, every: bool = False,
                   against: int | None = None, split: str = "dev") -> Evaluation:
    """`selfalign eval`: evaluate round k's policy (default: the newest adapter; 0 is the base model) on
    the loop's held-out sample, every held-out prompt (`every`), a file, or the test split (`split`, always
    whole); with `against`, that round's policy answers the same prompts, for a paired gain. Answers
    already stored are not sampled again."""
    from selfalign.stages import evaluate

    with folder.lock():
        cfg = config_mod.load(folder.config_path)
        with open_store(folder.db_path) as store:
            k = folder.policy_round(round_k, controller.best_kept_round(cfg, store, folder.adapter_rounds()))
            rounds = [k] + ([folder.policy_round(against)] if against is not None and against != k else [])
            if k and not store.round(0):
                raise UsageError(f"{folder.name} has no round 0 baseline yet; run `selfalign run {folder.name}` first")
            engine, _ = engine_factory(cfg)
            results = {}
            for r in reversed(rounds):  # the baseline first: it is most often already stored
                if not store.round(r):
                    store.start_round(r, None)
                ctx = StageContext(cfg, store, engine, r, run_dir=folder.path, policy=folder.adapter_label(r),
                                   adapter=folder.adapter_of(r),
                                   progress=lambda stage, done, total, r=r: print(
                                       f"\rround {r} {stage}: {done}/{total}", end="", file=sys.stderr, flush=True))
                results[r] = evaluate.answer(ctx, prompt_file, every, split)
                print(file=sys.stderr)
            ids = [p.id for p in evaluate.heldout_prompts(StageContext(cfg, store, engine, k, run_dir=folder.path),
                                                          prompt_file, every, split)]
            return Evaluation(results[k], k, ids, rounds)


def render_evaluation(folder: RunFolder, evaluation: Evaluation, against: int | None, fmt: str) -> str:
    """The evaluated round's figures with 95 % intervals, its paired gain over `against`, per constraint type."""
    from selfalign import heldout

    with open_store(folder.db_path) as store:
        now = heldout.answers(store, evaluation.round, evaluation.prompt_ids)
        figures = heldout.round_figures(list(now.values()))
        gain = baseline = None
        if against is not None and against != evaluation.round:
            before = heldout.answers(store, against, evaluation.prompt_ids)
            gain, baseline = heldout.gain_figures(before, now), heldout.round_figures(list(before.values()))
    if fmt == "json":
        return json.dumps({"run": folder.name, "round": evaluation.round, "metrics": evaluation.metrics,
                           "figures": heldout.as_json(figures), "against": against,
                           "gain": heldout.as_json(gain) if gain else None,
                           "baseline": heldout.as_json(baseline) if baseline else None})
    return "\n\n".join([heldout.render_md(folder.name, evaluation.round, figures, gain, against, baseline),
                         render_metrics(evaluation.metrics, evaluation.round, folder.name, "md")])


def render_metrics(metrics: dict, k: int, name: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"run": name, "round": k, "metrics": metrics})
    rows = [f"| {key} | {'-' if value is None else f'{value:.4g}'} |" for key, value in sorted(metrics.items())]
    return "\n".join([f"### {name}, round {k}", "", "| metric | value |", "|---|---|", *rows])
