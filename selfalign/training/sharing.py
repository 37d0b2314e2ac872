"""Copies of a model's module tree that share its weights (the trainer's LoRA copy, the sampler's oneDNN copy)."""

from __future__ import annotations

import copy
import itertools


def sharing_copy(model):
    """A copy of the module tree whose weights are the original's tensors, not copies of them: training
    wraps modules in LoRA layers and never writes a base weight, and the sampler's oneDNN copy only reads
    (or borrows) them, so a second 0.5 GB of frozen weights would hold nothing new."""
    return copy.deepcopy(model, memo={id(t): t for t in itertools.chain(model.parameters(), model.buffers())})
