"""The trainer's frozen linear layers through oneDNN on a CPU.

LoRA trains small matrices beside frozen base weights, so most of a step's arithmetic is the frozen
layers' products: x W^T forward and g W backward (the input's gradient; W gets none). On AMD processors
torch's float32 GEMM (MKL) runs those at micro-batch shapes (512 rows) about 1.3-1.4x slower than oneDNN
(engines/onednn_linear.py says why). The layers keep their class's behaviour and their weights (still the
base model's tensors, shared): only the product is routed, and only while the weight is frozen, float32
and on a CPU; anything else takes nn.Linear's own path.
"""

from __future__ import annotations

import torch
from torch import nn

from selfalign.engines.onednn_linear import linear, usable_for


class _FrozenProduct(torch.autograd.Function):
    """x W^T + b with W and b frozen: the backward pass returns the input's gradient only."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        # g W = g (W^T)^T: a linear product by the transposed view, no copy of the weight
        return linear(grad.contiguous(), weight.t()) if ctx.needs_input_grad[0] else None, None, None


class OneDnnFrozenLinear(nn.Linear):
    """An nn.Linear (peft and everything else still see one) whose frozen products run through oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frozen = not self.weight.requires_grad and (self.bias is None or not self.bias.requires_grad)
        if frozen and x.dtype == torch.float32 and usable_for(self.weight):
            return _FrozenProduct.apply(x, self.weight, self.bias)
        return super().forward(x)


def route_frozen_linears(model) -> int:
    """Make every plain nn.Linear of the model (its own copy of the module tree) route frozen products
    through oneDNN, in place; return how many. Nothing when oneDNN cannot take the weights."""
    linears = [m for m in model.modules() if type(m) is nn.Linear and usable_for(m.weight)]
    for module in linears:
        module.__class__ = OneDnnFrozenLinear
    return len(linears)
