"""`selfalign correct`: train a run's corrector when it has none, then (optionally) correct a file of answers or
measure the corrector on a round's held-out answers (correction/batch.py, correction/measure.py)."""

from __future__ import annotations

import json
import sys

from selfalign import config as config_mod
from selfalign.correction import corrector
from selfalign.engines import select
from selfalign.errors import UsageError
from selfalign.runs import RunFolder
from selfalign.stages import StageContext
from selfalign.store import open_store


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _progress(label: str):
    return lambda done, total: print(f"\r{label}: {done}/{total}", end="", file=sys.stderr, flush=True)


def ready_corrector(folder: RunFolder, cfg, store, engine, k: int) -> None:
    """Round k's corrector, trained now from the run's stored data if it has none."""
    if corrector.trained(folder, k):
        return
    from selfalign.correction import triples

    found = triples.build(store, k, seed=cfg.run.seed)
    if not found:
        raise UsageError(f"{folder.name} has no correction triples up to round {k} (no repaired copies, close pairs "
                         "or clean answers); run more rounds first")
    _say(f"training round {k}'s corrector on {len(found)} triples (rounds 1-{k}) into "
         f"{corrector.adapter_dir(folder, k).relative_to(folder.path)}")
    corrector.train_corrector(folder, cfg, store, engine, k,
                              on_step=lambda record: print(f"\rcorrector step {record.step + 1} loss "
                                                           f"{record.loss:.3f}", end="", file=sys.stderr, flush=True))
    _say("")


def correct(folder: RunFolder, round_k: int | None, in_path: str | None, out_path: str | None, split: str | None,
            answers_round: int | None, fmt: str, engine_factory=select.make) -> str:
    if in_path is not None and split is not None:
        raise UsageError("give either --in FILE --out FILE (correct your answers) or --heldout SPLIT (measure the "
                         "corrector on a round's held-out answers), not both")
    if in_path is not None and out_path is None:
        raise UsageError("--in needs --out: where the corrected answers go")
    with folder.lock():
        cfg = config_mod.load(folder.config_path)
        with open_store(folder.db_path) as store:
            rounds = [r.k for r in store.rounds() if r.k >= 1 and store.pairs(r.k)]  # rounds with data to learn from
            k = round_k if round_k is not None else (rounds[-1] if rounds else 0)
            if k not in rounds:
                raise UsageError(f"round {k} of {folder.name} stored no pairs to learn corrections from; rounds "
                                 f"that did: {rounds or 'none'} (run `selfalign run {folder.name}` first)")
            engine, _ = engine_factory(cfg)
            ready_corrector(folder, cfg, store, engine, k)
            if in_path is None and split is None:
                return f"round {k}'s corrector is in {corrector.adapter_dir(folder, k)}"
            if in_path is not None:
                from selfalign.correction import batch

                counts = batch.run(folder, cfg, engine, k, in_path, out_path, cfg.eval.max_new_tokens)
                return (f"corrected {counts['items']} answers with round {k}'s corrector into {out_path}: "
                        f"{counts['changed']} changed, {counts['usable']} corrections usable")
            answers_round = k if answers_round is None else answers_round
            return _measure(folder, cfg, store, engine, k, split, answers_round, fmt)


def _measure(folder, cfg, store, engine, k: int, split: str, answers_round: int, fmt: str) -> str:
    from selfalign.correction import measure
    from selfalign.stages import evaluate

    ctx = StageContext(cfg, store, engine, answers_round, run_dir=folder.path)
    ids = [p.id for p in evaluate.heldout_prompts(ctx, None, every=True, split=split)]
    answered = {r.prompt_id for r in store.responses(round=answers_round) if r.kind == "eval"} & set(ids)
    if len(answered) < len(ids):
        raise UsageError(f"round {answers_round} of {folder.name} answered {len(answered)} of the {len(ids)} "
                         f"{split} prompts; run `selfalign eval {folder.name} --round {answers_round} --split {split}"
                         f"{' --all' if split == 'dev' else ''}` first")
    corrected = measure.correct_answers(folder, store, engine, k, answers_round, ids,
                                        max_new_tokens=cfg.eval.max_new_tokens,
                                        progress=_progress(f"correcting round {answers_round}'s {split} answers"))
    _say("")
    figures = measure.figures(store, corrected)
    md = measure.render_md(f"{folder.name}: round {k}'s corrector on round {answers_round}'s {split} answers", figures)
    if fmt == "json":
        return json.dumps({"run": folder.name, "corrector_round": k, "answers_round": answers_round, "split": split,
                           "figures": measure.as_json(figures), "markdown": md})
    return md
