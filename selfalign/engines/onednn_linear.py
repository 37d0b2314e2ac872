"""Linear layers through oneDNN for sampling on a CPU.

torch's float32 matrix product on a CPU is MKL's. On AMD processors MKL takes a generic code path, and
the thin products of a decode step (at most batch_size rows against each weight) ran at about half the
speed oneDNN reaches on the same machine (benchmarks/generate.py, README "Measured"). oneDNN ships
inside torch and chooses its kernels by the instructions the processor has, whoever made it. So the
sampling copy of the model calls oneDNN for every linear layer; training keeps torch's own (it needs
autograd, and its products are wider).

A merged adapter copy belongs to the engine alone: its weights are reordered once into oneDNN's blocked
layout and the plain ones dropped (memory neutral). The base model's weights are shared with the trainer,
so its sampling copy passes them to oneDNN as they are (no second copy of 0.5 GB). Imported only when a
CPU engine samples, so torch loads lazily.
"""

from __future__ import annotations

import torch
from torch import nn


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


def swap_linears(model, *, reorder: bool) -> int:
    """Replace every nn.Linear of the model, in place, by a OneDnnLinear; return how many. With reorder the
    weights are reordered into oneDNN's layout (the plain ones are then dropped with the old modules);
    without, the OneDnnLinear uses the same tensors."""
    # names only: holding the old modules would keep every plain weight alive until the last is reordered
    targets = [(parent, name) for parent in model.modules()
               for name, child in parent.named_children() if type(child) is nn.Linear]
    with torch.inference_mode():
        for parent, name in targets:
            linear = getattr(parent, name)
            weight = linear.weight.detach()
            if reorder:
                weight = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous())
            bias = None if linear.bias is None else linear.bias.detach()
            setattr(parent, name, OneDnnLinear(weight, bias, linear.out_features))
            del linear, weight, bias
    return len(targets)
