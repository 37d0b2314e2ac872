"""Stages of a round: instruct, generate, judge, correct, pairs, train, evaluate; one module each.

A stage is `run(ctx)`: it reads what it needs from the store, writes its results back as it goes,
and skips work already stored, so a killed stage resumes without redoing or duplicating anything.
Stages never call each other; the loop decides the order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from selfalign.config_sections import Config
from selfalign.engines.base import Engine, GenerationRequest
from selfalign.store import Store
from selfalign.store.rows import MIRROR, SAMPLE

# The order the loop runs a round's stages in; compare, the UI's pipeline and the gain benchmark list them so.
STAGES = ("instruct", "generate", "judge", "correct", "pairs", "train", "evaluate")


class StageStopped(Exception):
    """A stop was requested between batches; everything finished so far is stored."""


@dataclass
class StageContext:
    config: Config
    store: Store
    engine: Engine
    round: int
    run_dir: Path | None = None
    policy: str = "base"  # label of what is sampled: 'base' or the adapter's path in the run folder
    adapter: str | None = None  # absolute path of that adapter (None: the base model)
    should_stop: Callable[[], bool] = field(default=lambda: False)
    progress: Callable[[str, int, int], None] | None = None  # (stage, done, total); default: the stages table
    constraint_weights: dict[str, float] | None = None  # the controller's curriculum for attaching constraints

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(stage, done, total)
        else:
            self.store.stage_progress(self.round, stage, done, total)

    def check_stop(self) -> None:
        if self.should_stop():
            raise StageStopped()


def round_responses(ctx: StageContext):
    """The round's training prompts by id, and the responses the current policy sampled for them
    (skipped ones left out): what judge, pairs and the health metrics all work on."""
    train = {p.id: p for p in sampled_prompts(ctx.store, ctx.round)}
    responses = [r for r in ctx.store.responses(round=ctx.round) if r.prompt_id in train
                 and r.policy == ctx.policy and r.kind == SAMPLE and r.finish_reason != "skipped"]
    return train, responses


def sampled_prompts(store, k: int) -> list:
    """The round's training prompts that get samples: all but the mirror prompts the pairs stage makes from
    them (pairs.mirror), whose answers are copies of their original's."""
    return [p for p in store.prompts(split="train", round=k) if p.source != MIRROR]


def by_prompt(responses) -> dict:
    """prompt id -> its responses in sample order."""
    groups: dict = {}
    for r in sorted(responses, key=lambda r: (r.prompt_id, r.sample_index)):
        groups.setdefault(r.prompt_id, []).append(r)
    return groups


def derive_seed(*parts) -> int:
    """A stable seed from the run seed and whatever identifies the work (round, prompt...)."""
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def policy_request(ctx: StageContext, text: str, *, key, n: int, seed: int, max_new_tokens: int,
                   temperature: float, top_p: float) -> GenerationRequest:
    """A request for the policy in the run's prompting style: the chat template, or URIAL for base models."""
    cfg = ctx.config
    if cfg.run.prompting == "urial":
        from selfalign import prompts

        template = prompts.load_template(cfg.generate.urial_template, ("query",), ctx.run_dir)
        return GenerationRequest(key=key, prompt=template.render(query=text), n=n, max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_p=top_p, stop=template.stop + cfg.generate.stop,
                                 seed=seed)
    return GenerationRequest(key=key, messages=[{"role": "user", "content": text}], n=n,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             stop=list(cfg.generate.stop), seed=seed)
