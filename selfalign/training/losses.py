"""Preference and SFT losses as pure tensor functions.

Inputs are per-sequence log-probabilities of the response tokens: summed for DPO, averaged per
token for IPO and length-normalised DPO (LN-DPO), split at the pair's common length for
length-desensitised DPO (LD-DPO), and per token for SFT. Each preference loss
returns (loss, rewards_chosen, rewards_rejected), the rewards being beta * (policy - reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
        ref_rejected: torch.Tensor, beta: float, offset: torch.Tensor | float = 0.0,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)) - offset); the offset is
    per pair (R-DPO's length term, see length_offset), 0 for plain DPO."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen - rejected - offset)
    return loss.mean(), chosen.detach(), rejected.detach()


def length_offset(chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor, weight: float) -> torch.Tensor:
    """R-DPO's length term: weight x (chosen tokens - rejected tokens), taken off each pair's margin.
    A pair whose chosen answer is the shorter starts with its margin raised, so it is "won" sooner and
    pulls less; one whose chosen answer is the longer pulls more. When most rejected answers are the
    longer ones (cut off, looping, or simply wordier), DPO can widen every margin by ending answers
    sooner; this takes that shortcut's reward away without dropping a pair."""
    return weight * (chosen_tokens - rejected_tokens).to(torch.float32)


def ln_dpo(policy_chosen_mean, policy_rejected_mean, ref_chosen_mean, ref_rejected_mean, beta: float,
           offset: torch.Tensor | float = 0.0):
    """DPO on per-token mean log-probs, so a longer response earns no reward for its length alone."""
    return dpo(policy_chosen_mean, policy_rejected_mean, ref_chosen_mean, ref_rejected_mean, beta, offset)


def desensitised(total: torch.Tensor, common: torch.Tensor, alpha: float) -> torch.Tensor:
    """LD-DPO's log-probability of a response: its tokens up to the pair's common length count whole, the
    longer answer's excess counts alpha times. alpha 1 is DPO (the sum); alpha 0 compares the two answers
    over equal lengths, so the excess of a longer one (a loop, a cut-off) neither wins nor loses by length.
    Between them, DPO's pull towards the shorter answer (the rejected one is the longer in most pairs, and
    shortening everything widens the margin cheapest) is weakened without letting loops go unpunished."""
    return common + alpha * (total - common)


def ipo(policy_chosen_mean, policy_rejected_mean, ref_chosen_mean, ref_rejected_mean, beta: float):
    """IPO: (h - 1 / (2 beta))^2 with h the difference of mean log-prob ratios."""
    chosen = policy_chosen_mean - ref_chosen_mean
    rejected = policy_rejected_mean - ref_rejected_mean
    loss = (chosen - rejected - 1 / (2 * beta)) ** 2
    return loss.mean(), (beta * chosen).detach(), (beta * rejected).detach()


def sft(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy over response tokens only (mask 1 on response tokens)."""
    return -(token_logps * mask).sum() / mask.sum().clamp(min=1)


def chosen_nll(chosen_mean_logps: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of the chosen answers' per-token negative log-likelihood: the SFT term that
    RPO adds to DPO, since DPO alone can lower both answers' likelihood while widening their gap."""
    return -chosen_mean_logps.mean()


def rrhf(mean_logps: torch.Tensor, best_token_logps: torch.Tensor, best_mask: torch.Tensor,
         sft_weight: float = 1.0) -> torch.Tensor:
    """RRHF for one ranked list (best first): sum over i better than j of max(0, p_j - p_i) on
    length-normalised log-probs, plus SFT on the best response."""
    better = mean_logps[:, None]
    worse = mean_logps[None, :]
    upper = torch.triu(torch.ones_like(better * worse, dtype=torch.bool), diagonal=1)
    rank = torch.clamp(worse - better, min=0)[upper].sum()
    return rank + sft_weight * sft(best_token_logps, best_mask)
