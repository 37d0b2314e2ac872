"""Bootstrap intervals for held-out figures, single and paired. Pure Python, no model, no database.

Every held-out figure is a statistic over prompts: prompt-level satisfaction is the mean of one 0/1
per prompt, instruction-level satisfaction is a ratio of sums (constraints met / constraints asked)
over prompts. An interval resamples prompts with replacement; a paired gain resamples the same
prompts for both rounds, so what the two rounds share (how hard each prompt is) cancels.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int  # prompts behind it

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}

    def fmt(self, scale: float = 1.0, digits: int = 3, signed: bool = False) -> str:
        sign = "+" if signed else ""
        return (f"{self.value * scale:{sign}.{digits}f} [{self.low * scale:{sign}.{digits}f}, "
                f"{self.high * scale:{sign}.{digits}f}]")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, interpolating linearly between ranks."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = q * (len(sorted_values) - 1)
    below = int(position)
    above = min(below + 1, len(sorted_values) - 1)
    return sorted_values[below] + (sorted_values[above] - sorted_values[below]) * (position - below)


def bootstrap(items: Sequence[T], statistic: Callable[[Sequence[T]], float], *, resamples: int = RESAMPLES,
              level: float = LEVEL, seed: int = 0) -> Estimate:
    """Percentile bootstrap interval of `statistic` over `items` (one item per prompt)."""
    if not items:
        raise ValueError("no items to estimate from")
    rng = random.Random(seed)
    n = len(items)
    draws = sorted(statistic([items[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    tail = (1 - level) / 2
    return Estimate(statistic(items), percentile(draws, tail), percentile(draws, 1 - tail), n)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def ratio(pairs: Sequence[tuple[float, float]]) -> float:
    """sum of numerators / sum of denominators: instruction-level satisfaction from (met, asked)."""
    asked = sum(d for _, d in pairs)
    return sum(m for m, _ in pairs) / asked if asked else 0.0


def paired_gain(before: Sequence[T], after: Sequence[T], statistic: Callable[[Sequence[T]], float], *,
                resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Estimate:
    """statistic(after) - statistic(before), both on the same prompts (item i of each is prompt i),
    with a bootstrap interval that resamples prompts jointly."""
    if len(before) != len(after):
        raise ValueError(f"paired samples differ in size ({len(before)} vs {len(after)}); use the same prompts")
    joined = list(zip(before, after, strict=True))

    def gain(sample: Sequence[tuple[T, T]]) -> float:
        return statistic([a for _, a in sample]) - statistic([b for b, _ in sample])

    return bootstrap(joined, gain, resamples=resamples, level=level, seed=seed)
