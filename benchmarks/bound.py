"""What this machine can do at best, measured in the benchmark's own process, so a throughput means
something on any machine: the matmul rate (GFLOP/s) and the model's FLOP per token from its own shapes.

Sampling costs about 2 x (linear weights) FLOP per generated token; LoRA training about 4 x per token
(the forward, and the backward through activations: frozen base weights get no weight gradient) plus
2 x once for the reference log-probs. Attention scores are left out (small at these lengths).
"""

from __future__ import annotations

import time


def matmul_gflops(m: int = 2048, k: int = 2048, n: int = 2048, repeats: int = 5) -> float:
    """The best of a few fp32 matmuls of this shape, in GFLOP/s, with torch's current threads."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def linear_weights(model) -> int:
    """Weights that every token multiplies: all Linear layers, the (tied) output layer included once."""
    import torch

    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    return total


def share(rate_tok_s: float, flop_per_token: float, gflops: float) -> str:
    """'NN % of the bound' for a throughput, with the bound itself."""
    bound = gflops * 1e9 / flop_per_token
    return f"{100 * rate_tok_s / bound:5.1f} % of the bound ({bound:.0f} tok/s)"
