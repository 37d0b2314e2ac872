"""The engine interface: requests in, results out, plus a log-probability scorer.

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


class Engine(Protocol):
    name: str

    def generate(self, requests: Sequence[GenerationRequest], on_result: OnResult | None = None,
                 progress: Progress | None = None) -> list[GenerationResult]:
        """Sample every request; `on_result` is called as each sample finishes (stages store it then)."""

    def score(self, items: Sequence[tuple[list[dict[str, str]] | str, str]]) -> list[float | None]:
        """Mean token log-probability of each response given its prompt (messages or raw text)."""

    def set_adapter(self, path: str | None) -> None:
        """Sample from base + this LoRA adapter (None: the base model)."""

    def close(self) -> None:
        """Hand back memory (GPU memory before training in the same process)."""
