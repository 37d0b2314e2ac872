"""A corrector in front of a model: `selfalign serve RUN --corrector` (the run's own policy) and
`selfalign serve --upstream-url URL --upstream-model M --corrector-from RUN[:K]` (any OpenAI-compatible server).

A served request carries no verifiable constraints, so the inspector here is the rest of the outcome: a
correction replaces the reply only when it is usable (ends by itself without looping, does not echo the
request, does not gut the reply, adds no marked form: correction/outcomes.py); otherwise the reply is
returned as it came. Either way the reply as it came is in the choice's "original" field.
"""

from __future__ import annotations

from pathlib import Path

from selfalign.correction import corrector, outcomes
from selfalign.engines.base import GenerationRequest
from selfalign.errors import UsageError


class Corrector:
    """A run's trained corrector on its base model, ready to correct replies (not thread-safe: the server locks)."""

    def __init__(self, engine, adapter: str | Path, run_dir: str | Path, max_new_tokens: int, name: str):
        self.engine, self.adapter, self.run_dir = engine, str(adapter), run_dir
        self.max_new_tokens, self.name = max_new_tokens, name

    @classmethod
    def of_run(cls, folder, k: int, engine, cfg) -> Corrector:
        """Round k's trained corrector of a run, on `engine` (the run's base model), at the run's answer budget."""
        return cls(engine, corrector.adapter_dir(folder, k), folder.path, cfg.eval.max_new_tokens,
                   f"{folder.name} round {k} corrector")

    def fix_all(self, question: str, replies: list[str]) -> list[dict]:
        """Per reply: the text to return ('final') and what the corrector did ('outcome')."""
        results = corrector.correct(self.engine, self.adapter, [(question, reply) for reply in replies],
                                    max_new_tokens=self.max_new_tokens, run_dir=self.run_dir)
        out = []
        for reply, result in zip(replies, results, strict=True):
            o = outcomes.assess(question, [], reply, result.text, result.finish_reason)
            out.append({"final": result.text if o.usable else reply,
                        "outcome": {"applied": o.usable, "noop": o.noop, "echo": o.echo, "gutted": o.gutted,
                                    "degenerate": o.degenerate, "added_forms": list(o.added_forms)}})
        return out


def parse_source(text: str) -> tuple[str, int | None]:
    """RUN or RUN:K -> (run name, round or None)."""
    name, _, k = text.partition(":")
    if not name or (k and not k.isdigit()):
        raise UsageError(f"--corrector-from {text!r}: give RUN or RUN:K (a run name and a round number)")
    return name, int(k) if k else None


def corrector_round(folder, k: int | None) -> int:
    """The round whose trained corrector to use: k, or the newest trained one."""
    newest = corrector.latest(folder)
    if newest is None:
        raise UsageError(f"{folder.name} has no trained corrector; train one with `selfalign correct {folder.name}`")
    if k is None:
        return newest
    if not corrector.trained(folder, k):
        raise UsageError(f"round {k} of {folder.name} has no trained corrector; train it with `selfalign correct "
                         f"{folder.name} --round {k}` (newest trained: round {newest})")
    return k


def upstream(client):
    """Check that an OpenAI-compatible server answers and serves the model, and return a function that forwards
    a request to it. Unreachable, refusing or without that model: one SelfalignError, before anything serves."""
    models = client.models()
    if client.model not in models:
        raise UsageError(f"{client.base_url} does not serve model {client.model!r} (it serves: "
                         f"{', '.join(models[:8]) or 'none'}); pass one of those to --upstream-model")

    def answer(request: GenerationRequest) -> list[dict]:
        sampling = {"max_tokens": request.max_new_tokens, "temperature": request.temperature, "top_p": request.top_p,
                    "n": request.n, "stop": request.stop, "seed": request.seed}
        choices = client.chat(request.messages, **sampling) if request.messages is not None else \
            client.complete(request.prompt or "", **sampling)
        return [{"text": c["text"], "finish_reason": c["finish_reason"], "tokens": c["tokens"]} for c in choices]

    return answer
