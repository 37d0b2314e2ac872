"""The engine interface: requests in, results out; which adapter samples is an argument of each call.

Small on purpose so that three backends fit it: transformers (CPU, default), vLLM (CUDA) and
any OpenAI-compatible HTTP server. Stages only ever talk to this interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class GenerationRequest:
    """One prompt, sampled `n` times. Give `messages` (chat template applied by the engine) or a raw
    `prompt` (completion, e.g. URIAL for base models)."""

    key: Any
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    n: int = 1
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.9
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    # One seed per sample (row i draws from sample_seeds[i]): a sample's random stream then depends on the
    # sample alone, not on which other requests share its batch or how many samples a resume still needs.
    # Empty: derived from `seed` and the row's position in the request.
    sample_seeds: tuple[int, ...] = ()

    def params(self) -> dict[str, Any]:
        """What gets stored with each response."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens,
                "stop": list(self.stop), "seed": self.seed}


@dataclass
class GenerationResult:
    key: Any
    sample_index: int
    text: str
    tokens: int
    finish_reason: str  # stop (end of sequence), length, stop_string, skipped
    mean_logprob: float | None
    duration_s: float
    detail: str = ""  # why a request was skipped, for the events log


Progress = Callable[[int, int], None]  # (results done, results total)
OnResult = Callable[[GenerationResult], None]
StopAsked = Callable[[], bool]


class Throttled:
    """A stop question asked at most once every `every_s` seconds (it may read a database), however
    often the engine's loop comes round; in between the answer is no."""

    def __init__(self, ask: StopAsked, every_s: float = 1.0):
        import time

        self.ask, self.every_s, self.last, self.clock = ask, every_s, float("-inf"), time.monotonic

    def __call__(self) -> bool:
        now = self.clock()
        if now - self.last < self.every_s:
            return False
        self.last = now
        return self.ask()


class Tokenizing(Protocol):
    """What building training examples needs: the tokenizer and the prompt formatting the policy saw."""

    tokenizer: Any

    def prompt_ids(self, messages_or_prompt: list[dict[str, str]] | str) -> list[int]: ...


class Trainable(Tokenizing, Protocol):
    """What the trainer needs: the base model (no adapter) and the pad id, besides tokenizing."""

    base: Any
    pad_id: int


class Engine(Protocol):
    name: str
    where: str  # what it samples on, for the log: a torch device, "cuda" under vLLM, a server's URL

    def generate(self, requests: Sequence[GenerationRequest], *, adapter: str | None = None,
                 on_result: OnResult | None = None, progress: Progress | None = None,
                 should_stop: StopAsked | None = None) -> list[GenerationResult]:
        """Sample every request from the base model plus the LoRA adapter in folder `adapter` (None: the
        base model); `on_result` is called as each sample finishes (stages store it then). `should_stop` is
        asked while the call runs (between decode steps, batches or requests, at most about once a
        second); once it says yes the call returns early with the samples it finished, and the caller
        makes the rest another time (so a stage can hand the engine all its requests in one call)."""

    def for_training(self, cfg, *, weights: bool = True) -> Trainable | Tokenizing:
        """The model training uses: this engine's own when it holds one, else a transformers copy of
        cfg.model loaded once per engine; `weights=False`: only what tokenizing needs."""

    def release_memory(self) -> None:
        """Make room for training in this process (vLLM sleeps until its next call; others do nothing)."""

    def close(self) -> None:
        """Drop the model."""


class TokenizerOnly:
    """Tokenizing with a tokenizer and no model (a data-parallel round's parent process under vLLM)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def prompt_ids(self, messages_or_prompt) -> list[int]:
        from selfalign.engines.transformers_engine import prompt_ids

        return prompt_ids(self.tokenizer, messages_or_prompt)


def load_for_training(cfg):
    """cfg.model with transformers, for an engine that samples elsewhere (vLLM, a server)."""
    from selfalign.engines.transformers_engine import TransformersEngine

    return TransformersEngine.load(cfg.model.name, device=cfg.run.device, dtype=cfg.model.dtype,
                                   max_context=cfg.model.max_context)
