"""Log-probability of each target token under the output layer, without keeping the logits.

The output layer of a small model is its largest activation: 49,152 words per position, so a
micro-batch of 2,000 response tokens holds 400 MB of logits, as much again for their log-softmax,
and twice that for their gradients in the backward pass. Here the logits live one chunk at a time.

The gradient of log p(target | h) with respect to h is W[target] - softmax(h W^T) W: it does not depend
on the loss above, only on h. So the forward pass, which has each chunk's softmax in hand anyway,
computes that vector and keeps it (one hidden-size row per token, 1/85th of the logits); the backward
pass only scales it by the incoming gradient. No logits are recomputed, and the work is the same
matmuls that autograd would run (logits forward, softmax times W backward).
"""

from __future__ import annotations

import torch

CHUNK_ROWS = 512  # positions whose logits exist at once: 512 x 49,152 x 4 bytes = 100 MB


def target_logps(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[n] float32 log-probabilities of targets [n] given hidden states [n, d] through `head`.

    A plain bias-free Linear head whose weight is frozen (LoRA leaves it so) takes the chunked path;
    anything else (a head with a bias, an adapter on it, a trained weight) goes the plain way."""
    plain = type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad
    if not plain:
        logits = head(hidden).float()
        return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    return _ChunkedTargetLogps.apply(hidden, head.weight, targets)


class _ChunkedTargetLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets):
        wants_grad = ctx.needs_input_grad[0]
        out = hidden.new_empty(len(hidden), dtype=torch.float32)
        slope = hidden.new_empty(hidden.shape, dtype=torch.float32) if wants_grad else None
        for start in range(0, len(hidden), CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            logits = (hidden[rows] @ weight.T).float()
            norm = logits.logsumexp(-1, keepdim=True)
            out[rows] = logits.gather(-1, targets[rows, None]).squeeze(-1) - norm.squeeze(-1)
            if wants_grad:
                probs = logits.sub_(norm).exp_()  # the chunk's logits are not needed again
                slope[rows] = weight[targets[rows]].float() - probs @ weight.float()
        ctx.save_for_backward(slope)
        ctx.hidden_dtype = hidden.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (slope,) = ctx.saved_tensors
        return (grad_out[:, None] * slope).to(ctx.hidden_dtype), None, None
