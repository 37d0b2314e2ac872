"""Linear layers through oneDNN for sampling on a CPU.

torch's float32 matrix product on a CPU is MKL's. On AMD processors MKL takes a generic code path, and
the thin products of a decode step (at most batch_size rows against each weight) ran at about half the
speed oneDNN reaches on the same machine (benchmarks/generate.py, README "Measured"). oneDNN ships
inside torch and chooses its kernels by the instructions the processor has, whoever made it. So the
sampling copy of the model calls oneDNN for every linear layer; training keeps torch's own (it needs
autograd, and its products are wider).

A merged adapter copy belongs to the engine alone: its weights are reordered once into oneDNN's blocked
layout and the plain ones dropped (memory neutral). The base model's weights are shared with the trainer:
its sampling copy either passes them to oneDNN as they are, or borrows them (`lend`): each is reordered
and the base's plain tensor emptied, and `give_back` makes the plain one again from the reordered one
(exact: the reorder only moves values) before anything else reads the base. Reordered weights sampled
~1.24x faster (README "Measured"), and borrowing keeps one model's memory. Imported only when a CPU
engine samples, so torch loads lazily.
"""

from __future__ import annotations

import os

import torch
from torch import nn

# oneDNN keeps each kernel it builds, one per input shape, in two caches of 1,024 entries (its own and
# ideep's, ~1-2 MB an entry). Sampling meets hundreds of shapes (every prefill's padded size, every row
# count a batch shrinks to) and a process that samples for hours filled both: a round's generate stage
# grew to 9-10 GB. A decode step needs a handful of shapes, so a small cache costs little rebuilding.
# Read when oneDNN builds its first kernel, which is after this import; a user's own setting wins.
CACHE_ENTRIES = "64"
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", CACHE_ENTRIES)
os.environ.setdefault("LRU_CACHE_CAPACITY", CACHE_ENTRIES)


class OneDnnLinear(nn.Module):
    """y = x W^T + b by oneDNN; `weight` is the plain [out, in] matrix or oneDNN's reordered copy of it."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> None:
        super().__init__()
        self.weight, self.bias, self.out_features = weight, bias, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def usable(model) -> bool:
    """oneDNN can take this model's linear layers: float32 weights on a CPU, and a torch built with it."""
    weight = next(model.parameters())
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def swap_linears(model, *, reorder: bool, lend: bool = False) -> list[tuple[nn.Parameter, OneDnnLinear]]:
    """Replace every nn.Linear of the model, in place, by a OneDnnLinear. With reorder the weights are
    reordered into oneDNN's layout (the plain ones are then dropped with the old modules); without, the
    OneDnnLinear uses the same tensors. With lend (the model shares its weights with another, see the
    module docstring) a weight that only its linear layer uses is reordered and the shared plain tensor
    emptied; one used elsewhere too (an output layer tied to the input embedding) stays plain. Returns
    the borrowed (parameter, layer) pairs, for give_back."""
    uses: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            uses[id(param)] = uses.get(id(param), 0) + 1
    # names only: holding the old modules would keep every plain weight alive until the last is reordered
    targets = [(parent, name) for parent in model.modules()
               for name, child in parent.named_children() if type(child) is nn.Linear]
    borrowed = []
    with torch.no_grad():  # not inference_mode: an emptied parameter must stay a normal tensor
        for parent, name in targets:
            linear = getattr(parent, name)
            weight = linear.weight.detach()
            owned = uses[id(linear.weight)] == 1
            if reorder and (owned or not lend):
                weight = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous())
            bias = None if linear.bias is None else linear.bias.detach()
            layer = OneDnnLinear(weight, bias, linear.out_features)
            setattr(parent, name, layer)
            if reorder and lend and owned:
                borrowed.append((linear.weight, layer))
                linear.weight.data = torch.empty(0, dtype=weight.dtype)  # the reordered one is the only copy now
            del linear, weight, bias
    return borrowed


def give_back(borrowed: list[tuple[nn.Parameter, OneDnnLinear]]) -> None:
    """Plain weights for the parameters swap_linears(lend=True) emptied, made from the reordered ones one
    layer at a time; the layers lose theirs (so the sampling copy that holds them must not run again)."""
    with torch.no_grad():  # not inference_mode: the trainer saves these weights for its backward pass
        for param, layer in borrowed:
            param.data = layer.weight.to_dense()
            layer.weight = None
    borrowed.clear()
