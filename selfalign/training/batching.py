"""How a round's examples become optimizer steps and micro-batches: length buckets, then pieces of at
most `train.micro_batch_tokens` tokens through the model at once."""

from __future__ import annotations

import random
from typing import Protocol


class _HasSequences(Protocol):
    prompt: list[int]

    def sequences(self) -> list[list[int]]: ...


def tokens_of(example: _HasSequences, packed: bool) -> int:
    """Positions an example takes in the model: its prompt once when packed, else once per response."""
    seqs = example.sequences()
    return len(example.prompt) * (1 if packed else len(seqs)) + sum(len(s) for s in seqs)


def length_batches(examples: list, size: int, seed: int, epoch: int, packed: bool = False) -> list[list[int]]:
    """Length buckets: sort by length (a packed row's, or the longest sequence's), cut into batches,
    shuffle the batch order."""
    rng = random.Random(seed * 1000 + epoch)

    def length(i: int) -> int:
        ex = examples[i]
        return tokens_of(ex, True) if packed else len(ex.prompt) + max(len(s) for s in ex.sequences())

    order = sorted(range(len(examples)), key=lambda i: (length(i), rng.random()))
    batches = [order[i:i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def split(batch: list[int], examples: list, max_tokens: int, packed: bool = False) -> list[list[int]]:
    """Cut a batch into runs of examples with at most max_tokens tokens through the model at once
    (see tokens_of); an example above the limit goes alone (and the trainer recomputes its
    activations, see trainer.over_budget). The loss of each piece is weighted by its share of the
    step's pairs, so the step's gradient is the same: only the activations held for the backward
    pass shrink."""
    if max_tokens <= 0:
        return [batch]
    pieces, current, used = [], [], 0
    for i in batch:
        n = tokens_of(examples[i], packed)
        if current and used + n > max_tokens:
            pieces.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    return pieces + [current] if current else pieces
