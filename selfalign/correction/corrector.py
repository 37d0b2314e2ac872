"""The corrector itself: a second LoRA adapter on the policy's base, trained by SFT on correction triples
and applied greedily to (question, answer) pairs.

Its prompt is prompts/correct.txt (a run's own copy wins, like every template), given to the base's chat
template as the user turn; the loss is on the correction's tokens only, the trainer's SFT path. Round k's
corrector learns from the triples of rounds 1..k and lives in rounds/<k>/corrector/adapter, beside the
round's policy adapter; a finished one is reused, a killed training resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from selfalign.correction import triples as triples_mod
from selfalign.engines.base import GenerationRequest, GenerationResult

TEMPLATE = "correct.txt"
FOLDER = "corrector"
MAX_LENGTH = 1024  # question + answer + correction: twice an answer's budget and the template around it
BUDGET_EXTRA = 64  # tokens a correction may add beyond twice its answer's length
SEED_OFFSET = 7919  # the corrector's LoRA initialisation and batch order differ from the policy's of the round


def template(run_dir: str | Path | None = None):
    from selfalign import prompts

    return prompts.load_template(TEMPLATE, ("question", "answer"), run_dir)


def messages(tpl, question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": tpl.render(question=question, answer=answer)}]


def adapter_dir(folder, k: int) -> Path:
    """Where round k's corrector is saved (folder: a runs.RunFolder)."""
    return folder.round_dir(k) / FOLDER / "adapter"


def label(corrector_round: int) -> str:
    """How a correction row names its policy: the corrector's adapter in the run folder."""
    return f"rounds/{corrector_round}/{FOLDER}/adapter"


def stored(store, k: int, corrector_round: int) -> dict[int, object]:
    """source response id -> its correction stored in round k by round corrector_round's corrector."""
    from selfalign.store.rows import CORRECTION

    tag = label(corrector_round)
    return {r.params["corrected_from"]: r for r in store.responses(round=k)
            if r.kind == CORRECTION and r.policy == tag and "corrected_from" in r.params}


def trained(folder, k: int) -> bool:
    return (adapter_dir(folder, k) / "adapter_config.json").is_file()


def latest(folder, up_to: int | None = None) -> int | None:
    """The newest round (at most up_to) with a trained corrector, or None."""
    rounds = sorted(int(p.parent.parent.name) for p in folder.path.glob(f"rounds/*/{FOLDER}/adapter")
                    if p.parent.parent.name.isdigit() and (p / "adapter_config.json").is_file())
    rounds = [k for k in rounds if up_to is None or k <= up_to]
    return rounds[-1] if rounds else None


def train_corrector(folder, cfg, store, engine, k: int, *, on_step: Callable | None = None,
                    should_stop: Callable[[], bool] = lambda: False) -> Path | None:
    """Train round k's corrector on the triples of rounds 1..k (correction/triples.py) and return its adapter
    folder; a corrector already trained is returned as it is; None when the run has no triple yet."""
    from selfalign.training.trainer import Example, TrainJob, train

    out = adapter_dir(folder, k)
    if trained(folder, k):
        return out
    found = triples_mod.build(store, k, seed=cfg.run.seed)
    if not found:
        return None
    tpl = template(folder.path)
    trainer_engine = engine.for_training(cfg)
    tokenizer = trainer_engine.tokenizer
    examples = [Example(trainer_engine.prompt_ids(messages(tpl, t.question, t.answer)),
                        tokenizer(t.correction, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
                for t in found]
    # SFT on the correction only: no preference terms, no length term, a fresh LoRA on the base
    train_cfg = dataclasses.replace(cfg.train, loss="sft", sft_weight=0.0, length_margin=0.0,
                                    max_length=max(cfg.train.max_length, MAX_LENGTH))
    engine.release_memory()
    job = TrainJob(examples, train_cfg, out.parent, pad_id=trainer_engine.pad_id, seed=cfg.run.seed + SEED_OFFSET + k)
    adapter = train(trainer_engine.base, job, on_step=on_step, should_stop=should_stop)
    counts = {source: sum(1 for t in found if t.source == source) for source in ("repair", "pair", "identity")}
    (out.parent / "triples.json").write_text(_json({"round": k, "triples": len(found), **counts}), encoding="utf-8")
    return adapter


def budget(answer_tokens: int | None, cap: int) -> int:
    """New tokens a correction may take: room to rewrite and extend its answer (twice it, plus a paragraph),
    at most `cap`; a correction that runs past that is looping, not correcting."""
    return cap if answer_tokens is None else max(1, min(cap, 2 * answer_tokens + BUDGET_EXTRA))


def correct(engine, adapter: str | Path, items: Sequence[tuple[str, str]], *, max_new_tokens: int,
            answer_tokens: Sequence[int] | None = None, run_dir: str | Path | None = None,
            on_result: Callable[[GenerationResult], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[GenerationResult]:
    """Greedy corrections of (question, answer) items, in item order (result.key is the item's index); with
    answer_tokens each correction's budget follows its answer's length (budget), else it is max_new_tokens."""
    tpl = template(run_dir)
    requests = [GenerationRequest(key=i, messages=messages(tpl, question, answer), n=1,
                                  max_new_tokens=budget(answer_tokens[i] if answer_tokens else None, max_new_tokens),
                                  temperature=0.0, top_p=1.0, seed=0)
                for i, (question, answer) in enumerate(items)]
    results = engine.generate(requests, adapter=str(adapter), on_result=on_result, should_stop=should_stop)
    return sorted(results, key=lambda r: r.key)


def _json(value) -> str:
    import json

    return json.dumps(value, indent=2) + "\n"
