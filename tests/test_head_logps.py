"""The chunked output layer gives the same log-probabilities and gradients as full logits."""

import copy
import random

import pytest
import torch

from selfalign import models
from selfalign.training import head_logps
from selfalign.training.logps import response_logps


def plain_logps(head, hidden, targets):
    return head(hidden).float().log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(head_logps, "CHUNK_ROWS", 3)  # 10 rows: chunks of 3, 3, 3 and 1


def test_values_and_hidden_gradients_match_full_logits(small_chunks):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(False)
    hidden = torch.randn(10, 16, requires_grad=True)
    targets = torch.randint(0, 50, (10,))
    weights = torch.randn(10)  # a loss above that weighs each token differently

    expected = plain_logps(head, hidden, targets)
    (expected * weights).sum().backward()
    expected_grad, hidden.grad = hidden.grad.clone(), None

    got = head_logps.target_logps(head, hidden, targets)
    (got * weights).sum().backward()
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(hidden.grad, expected_grad, atol=1e-5)


def test_without_gradients_nothing_is_kept_and_values_match(small_chunks):
    head = torch.nn.Linear(8, 30, bias=False).requires_grad_(False)
    hidden, targets = torch.randn(7, 8), torch.randint(0, 30, (7,))
    with torch.no_grad():
        got = head_logps.target_logps(head, hidden, targets)
    assert torch.allclose(got, plain_logps(head, hidden, targets), atol=1e-5)


def test_a_trained_or_biased_head_takes_the_plain_path(monkeypatch):
    def refuse(*args):
        raise AssertionError("the chunked path must not run for this head")

    monkeypatch.setattr(head_logps._ChunkedTargetLogps, "apply", refuse)
    hidden, targets = torch.randn(4, 8, requires_grad=True), torch.randint(0, 30, (4,))
    trained = torch.nn.Linear(8, 30, bias=False)  # its weight wants a gradient
    biased = torch.nn.Linear(8, 30).requires_grad_(False)
    for head in (trained, biased):
        got = head_logps.target_logps(head, hidden, targets)
        got.sum().backward()
        assert torch.allclose(got, plain_logps(head, hidden, targets))
    assert trained.weight.grad is not None


def test_lora_gradients_through_the_tiny_model_match_full_logits(tiny_model_dir, monkeypatch, small_chunks):
    from peft import LoraConfig, get_peft_model

    base, _ = models.load(str(tiny_model_dir), device="cpu")
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                           target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero, which would leave A's gradient zero in both ways
            torch.nn.init.normal_(param, std=0.02)
    assert not model.get_output_embeddings().weight.requires_grad
    rng = random.Random(3)
    prompt = [rng.randrange(5, 400) for _ in range(9)]
    items = [(prompt, [rng.randrange(5, 400) for _ in range(n)]) for n in (5, 12, 7)]

    def run():
        model.zero_grad(set_to_none=True)
        logps, mask = response_logps(model, items, 0, 64, packed=True)
        (logps * mask).sum().backward()
        return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    chunked, chunked_grads = run()
    monkeypatch.setattr(head_logps._ChunkedTargetLogps, "apply",
                        lambda hidden, weight, targets: plain_logps(lambda h: h @ weight.T, hidden, targets))
    plain, plain_grads = run()
    assert torch.allclose(chunked, plain, atol=1e-5)
    assert chunked_grads.keys() == plain_grads.keys() and len(chunked_grads) == 2 * 3 * base.config.num_hidden_layers
    for name in plain_grads:
        assert torch.allclose(chunked_grads[name], plain_grads[name], atol=1e-5, rtol=1e-4), name
