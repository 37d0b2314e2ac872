"""Each loss against values worked out by hand on small tensors."""

import math

import pytest
import torch

from selfalign.training import losses


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_dpo_by_hand():
    # margins: (-1 - -2) - (-3 - -2.5) = 1.5 ; beta 0.1 -> 0.15
    loss, chosen, rejected = losses.dpo(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.1)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.15))))
    assert chosen.item() == pytest.approx(0.1) and rejected.item() == pytest.approx(-0.05)
    equal, _, _ = losses.dpo(t(-1.0), t(-1.0), t(-1.0), t(-1.0), beta=0.5)
    assert equal.item() == pytest.approx(math.log(2))


def test_dpo_batch_is_the_mean():
    loss, _, _ = losses.dpo(t(0.0, 1.0), t(0.0, 0.0), t(0.0, 0.0), t(0.0, 0.0), beta=1.0)
    expected = (math.log(2) + -math.log(1 / (1 + math.exp(-1)))) / 2
    assert loss.item() == pytest.approx(expected)


def test_r_dpo_takes_the_length_difference_off_the_margin():
    # two pairs with the same margin (0.15 as above); the first pair's chosen answer is 20 tokens shorter
    offset = losses.length_offset(torch.tensor([10, 30]), torch.tensor([30, 10]), 0.01)
    assert offset.tolist() == pytest.approx([-0.2, 0.2])
    loss, _, _ = losses.dpo(t(-1.0, -1.0), t(-3.0, -3.0), t(-2.0, -2.0), t(-2.5, -2.5), beta=0.1, offset=offset)
    shorter_won = -math.log(1 / (1 + math.exp(-(0.15 + 0.2))))
    longer_won = -math.log(1 / (1 + math.exp(-(0.15 - 0.2))))
    assert loss.item() == pytest.approx((shorter_won + longer_won) / 2)
    # the pair won by the shorter answer pulls less than the one won by the longer
    policy = t(-1.0, -1.0).requires_grad_()
    losses.dpo(policy, t(-3.0, -3.0), t(-2.0, -2.0), t(-2.5, -2.5), beta=0.1, offset=offset)[0].backward()
    assert 0 > policy.grad[0] > policy.grad[1]


def test_ipo_by_hand():
    # h = (-1 - -1.2) - (-2 - -1.5) = 0.2 + 0.5 = 0.7 ; beta 0.5 -> target 1 ; (0.7 - 1)^2 = 0.09
    loss, chosen, rejected = losses.ipo(t(-1.0), t(-2.0), t(-1.2), t(-1.5), beta=0.5)
    assert loss.item() == pytest.approx(0.09)
    assert chosen.item() == pytest.approx(0.1) and rejected.item() == pytest.approx(-0.25)


def test_ln_dpo_ignores_length_given_the_same_mean():
    short, _, _ = losses.ln_dpo(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.2)
    assert short.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.2))))


def test_ld_dpo_weighs_only_the_excess_over_the_common_length():
    # chosen: 2 tokens summing to -2; rejected: 4 tokens summing to -9, of which -3 in its first 2
    assert losses.desensitised(t(-9.0), t(-3.0), 0.5).item() == pytest.approx(-3.0 + 0.5 * -6.0)
    assert losses.desensitised(t(-9.0), t(-3.0), 1.0).item() == pytest.approx(-9.0)  # DPO
    assert losses.desensitised(t(-2.0), t(-2.0), 0.0).item() == pytest.approx(-2.0)  # the shorter is whole


def test_common_sums_cut_each_pair_at_its_shorter_answer():
    from selfalign.training.logps import common_sums

    token_logps = t([-1, -1, 0, 0], [-2, -2, -2, -2], [-1, -1, -1, 0], [-3, 0, 0, 0])
    mask = t([1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0])
    # pair 1: common length 2 -> -2 and -4; pair 2: common length 1 -> -1 and -3
    assert common_sums(token_logps, mask).tolist() == [-2.0, -4.0, -1.0, -3.0]


def test_sft_counts_response_tokens_only():
    logps = t(-1.0, -2.0, -3.0, -4.0)
    mask = t(0, 1, 1, 0)
    assert losses.sft(logps, mask).item() == pytest.approx(2.5)


def test_rrhf_by_hand():
    # ranked best first: p = [-1, -0.5, -2]; violations: p1 > p0 by 0.5 ; p2 < both: none
    best_logps, best_mask = t(-1.0, -1.0), t(1, 1)
    loss = losses.rrhf(t(-1.0, -0.5, -2.0), best_logps, best_mask, sft_weight=1.0)
    assert loss.item() == pytest.approx(0.5 + 1.0)
    ordered = losses.rrhf(t(-0.1, -0.5, -2.0), best_logps, best_mask, sft_weight=0.0)
    assert ordered.item() == 0.0


def test_gradients_push_chosen_up():
    policy_chosen = torch.tensor([-2.0], requires_grad=True)
    policy_rejected = torch.tensor([-2.0], requires_grad=True)
    loss, _, _ = losses.dpo(policy_chosen, policy_rejected, t(-2.0).float(), t(-2.0).float(), beta=0.1)
    loss.backward()
    assert policy_chosen.grad.item() < 0 < policy_rejected.grad.item()
