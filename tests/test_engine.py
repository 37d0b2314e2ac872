"""The transformers engine on the tiny model: batching, sampling, stop strings, scoring, adapters."""

import pytest

from selfalign import models
from selfalign.engines.base import GenerationRequest
from selfalign.engines.transformers_engine import TransformersEngine, _sample

PROMPTS = ["Hi.", "Write a haiku about rain and the river in the city.", "List three fruits, then stop."]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    model, tok = models.load(str(tiny_model_dir), device="cpu")
    return TransformersEngine(model, tok, batch_size=8, max_context=256)


def chat(text):
    return [{"role": "user", "content": text}]


def test_padded_batch_gives_the_same_greedy_text_as_one_prompt_alone(engine):
    requests = [GenerationRequest(key=i, messages=chat(p), temperature=0.0, max_new_tokens=12)
                for i, p in enumerate(PROMPTS)]
    together = {r.key: r for r in engine.generate(requests)}
    for request in requests:
        (alone,) = engine.generate([request])
        assert together[request.key].text == alone.text
        assert together[request.key].tokens == alone.tokens
        assert together[request.key].mean_logprob == pytest.approx(alone.mean_logprob, abs=1e-4)


def test_samples_seeds_and_progress(engine):
    seen = []
    requests = [GenerationRequest(key=i, messages=chat(p), n=3, temperature=1.0, top_p=0.95, max_new_tokens=10,
                                  seed=7) for i, p in enumerate(PROMPTS)]
    first = engine.generate(requests, progress=lambda done, total: seen.append((done, total)))
    assert sorted((r.key, r.sample_index) for r in first) == [(k, i) for k in range(3) for i in range(3)]
    assert seen[-1] == (9, 9) and [d for d, _ in seen] == list(range(1, 10))
    texts = {(r.key, r.sample_index): r.text for r in first}
    assert len(set(texts.values())) > 3  # samples differ
    again = {(r.key, r.sample_index): r.text for r in engine.generate(requests)}
    assert again == texts  # same requests and seeds: same samples
    other = [GenerationRequest(**{**r.__dict__, "seed": 8}) for r in requests]
    assert {(r.key, r.sample_index): r.text for r in engine.generate(other)} != texts


def test_length_limit_and_logprobs(engine):
    (result,) = engine.generate([GenerationRequest(key=0, messages=chat("Hi."), temperature=0.0, max_new_tokens=5)])
    if result.finish_reason == "length":
        assert result.tokens == 5
    assert result.finish_reason in {"length", "stop"}
    assert result.mean_logprob is None or result.mean_logprob < 0


def test_stop_string_cuts_the_text(engine):
    # Sampling, not greedy: a random model's greedy text is one repeated newline. The same request
    # and seed draw the same tokens, so the run with a stop string is a prefix of the one without.
    base = GenerationRequest(key=0, messages=chat(PROMPTS[1]), temperature=1.0, top_p=1.0, max_new_tokens=24)
    (full,) = engine.generate([base])
    stop = full.text[len(full.text) // 2: len(full.text) // 2 + 3]
    assert stop.strip(), f"tiny model text too short to test: {full.text!r}"
    (cut,) = engine.generate([GenerationRequest(**{**base.__dict__, "stop": [stop, "never-produced"]})])
    assert cut.finish_reason == "stop_string"
    assert stop not in cut.text and full.text.startswith(cut.text)


def test_prompt_longer_than_context_is_skipped_with_a_reason(engine):
    long = " ".join(["word"] * 400)
    results = engine.generate([GenerationRequest(key="long", messages=chat(long), n=2, max_new_tokens=8),
                               GenerationRequest(key="ok", messages=chat("Hi."), max_new_tokens=4)])
    skipped = [r for r in results if r.key == "long"]
    assert [r.finish_reason for r in skipped] == ["skipped", "skipped"]
    assert "exceeds the context of 256" in skipped[0].detail and skipped[0].text == ""
    assert [r.finish_reason for r in results if r.key == "ok"] != ["skipped"]


def test_raw_prompt_for_base_models(engine):
    (result,) = engine.generate([GenerationRequest(key=0, prompt="# Query:\nHi\n# Answer:\n", temperature=0.0,
                                                   max_new_tokens=6)])
    assert result.finish_reason in {"stop", "length"}


def test_adapter_changes_outputs_and_can_be_switched_off(engine, tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(engine.base), LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    request = GenerationRequest(key=0, messages=chat(PROMPTS[1]), temperature=1.0, max_new_tokens=12)
    (base,) = engine.generate([request])
    (tuned,) = engine.generate([request], adapter=str(tmp_path / "adapter"))
    assert tuned.text != base.text or tuned.mean_logprob != pytest.approx(base.mean_logprob)
    assert engine.base is not engine.model
    (back,) = engine.generate([request])  # no adapter named: the base model again
    assert back.text == base.text


def test_release_memory_drops_the_merged_adapter_and_the_next_call_merges_it_again(engine, tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(engine.base), LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    request = GenerationRequest(key=0, messages=chat(PROMPTS[0]), temperature=1.0, max_new_tokens=12, seed=3)
    (first,) = engine.generate([request], adapter=str(tmp_path / "adapter"))
    assert engine.model is not engine.base
    engine.release_memory()  # what the train stage calls before training
    assert engine.model is None and engine.adapter is None
    (again,) = engine.generate([request], adapter=str(tmp_path / "adapter"))
    assert (again.text, again.mean_logprob) == (first.text, first.mean_logprob)


def test_sampler_distribution_temperature_and_top_p():
    import torch

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    gen = torch.Generator().manual_seed(0)
    draws = torch.rand(4000, generator=gen, dtype=torch.float64)
    tokens, logprobs = _sample(logits, torch.full((4000,), 1.0), torch.full((4000,), 1.0), draws)
    freq = torch.bincount(tokens, minlength=4).float() / 4000
    assert torch.allclose(freq, logits[0].softmax(-1), atol=0.03)
    assert torch.allclose(logprobs, logits[0].log_softmax(-1)[tokens])
    tokens, _ = _sample(logits, torch.full((4000,), 1.0), torch.full((4000,), 0.5), draws)
    assert set(tokens.tolist()) == {0}  # the nucleus of 0.5 holds only the top token (p=0.64)
    tokens, _ = _sample(logits, torch.zeros(4000), torch.full((4000,), 0.9), draws)
    assert set(tokens.tolist()) == {0}  # temperature 0 is greedy


def test_sampler_is_exact_when_the_nucleus_is_wider_than_the_candidates():
    import torch

    logits = torch.zeros(2000, 1000)  # flat: a 0.9 nucleus needs 900 tokens, more than the first top-k
    draws = torch.rand(2000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tokens, _ = _sample(logits, torch.ones(2000), torch.full((2000,), 0.9), draws)
    assert int(tokens.max()) > 256 and len(set(tokens.tolist())) > 600


def _by_key(results):
    return {(r.key, r.sample_index): r for r in results}


@pytest.mark.parametrize("reserve", [64, 3])
def test_reserved_kv_cache_draws_the_same_samples_as_a_growing_one(engine, monkeypatch, reserve):
    """The cache reserved at the prefill (the default) against transformers' DynamicCache: the same tokens
    and log-probs, with rows finishing at different steps so finished rows are dropped mid-batch.
    reserve 3: the cache grows by 3 columns at a time, many times per answer."""
    from selfalign.engines import kv_cache

    monkeypatch.setattr(kv_cache, "RESERVE_TOKENS", reserve)
    grown = []
    reserve_fn = kv_cache.GrowingLayer._reserve
    monkeypatch.setattr(kv_cache.GrowingLayer, "_reserve",
                        lambda self, k, v, capacity: grown.append(capacity) or reserve_fn(self, k, v, capacity))
    requests = [GenerationRequest(key=i, messages=chat(p), n=3, temperature=1.0, top_p=0.9, seed=3,
                                  max_new_tokens=6 + 7 * i) for i, p in enumerate(PROMPTS)]
    assert engine.reserve_cache
    engine.refill = False  # transformers' cache cannot take new rows: compare batches that only shrink
    try:
        reserved = _by_key(engine.generate(requests))
        engine.reserve_cache = False
        plain = _by_key(engine.generate(requests))
    finally:
        engine.reserve_cache = engine.refill = True
    layers = engine.base.config.num_hidden_layers
    assert (len(grown) > 3 * layers) == (reserve == 3)  # a small reserve grows; 64 covers these answers at once
    assert reserved.keys() == plain.keys()
    assert len({r.tokens for r in plain.values()}) > 1  # rows ended at different steps
    for key, r in plain.items():
        assert (reserved[key].text, reserved[key].tokens, reserved[key].finish_reason) == \
            (r.text, r.tokens, r.finish_reason)
        assert reserved[key].mean_logprob == pytest.approx(r.mean_logprob, abs=1e-4)


@pytest.mark.parametrize("reserve", [64, 2])
def test_refilling_the_batch_gives_the_same_greedy_answers_as_batches_that_shrink(engine, monkeypatch, reserve):
    """Waiting prompts join the running rows as rows finish (the default): the same greedy tokens and
    log-probs as a batch that only shrinks, with rows of several lengths so joins happen mid-decode
    (reserve 2: joined caches grow again two columns at a time)."""
    from selfalign.engines import decode_batch, kv_cache

    monkeypatch.setattr(kv_cache, "RESERVE_TOKENS", reserve)
    prompts = [f"{p} ({i})" for i in range(4) for p in PROMPTS]
    requests = [GenerationRequest(key=i, messages=chat(p), n=2, temperature=0.0, max_new_tokens=3 + 4 * (i % 4))
                for i, p in enumerate(prompts)]
    joins = []
    absorb = decode_batch.Batch.absorb
    monkeypatch.setattr(decode_batch.Batch, "absorb",
                        lambda self, fresh: joins.append(len(fresh.live)) or absorb(self, fresh))
    refilled = _by_key(engine.generate(requests))
    assert joins  # prompts joined a running batch
    engine.refill = False
    try:
        joins.clear()
        shrinking = _by_key(engine.generate(requests))
    finally:
        engine.refill = True
    assert not joins and refilled.keys() == shrinking.keys() and len(refilled) == 2 * len(prompts)
    assert len({r.tokens for r in shrinking.values()}) > 2
    for key, r in shrinking.items():
        assert (refilled[key].text, refilled[key].tokens, refilled[key].finish_reason) == \
            (r.text, r.tokens, r.finish_reason)
        assert refilled[key].mean_logprob == pytest.approx(r.mean_logprob, abs=1e-4)


def test_refilled_samples_are_complete_and_reproducible(engine):
    requests = [GenerationRequest(key=i, messages=chat(f"{PROMPTS[i % 3]} {i}"), n=3, temperature=1.0, top_p=0.9,
                                  seed=5, max_new_tokens=2 + 3 * (i % 5)) for i in range(9)]
    first = _by_key(engine.generate(requests))
    assert sorted(first) == [(k, i) for k in range(9) for i in range(3)]
    assert all(r.tokens <= requests[k].max_new_tokens for (k, _), r in first.items())
    again = _by_key(engine.generate(requests))
    assert {k: (r.text, r.tokens) for k, r in again.items()} == {k: (r.text, r.tokens) for k, r in first.items()}


def test_a_stop_asked_mid_call_returns_the_finished_samples_only(engine, monkeypatch):
    from selfalign.engines import transformers_engine

    monkeypatch.setattr(transformers_engine, "STOP_CHECK_S", 0.0)
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 6  # a few steps in

    requests = [GenerationRequest(key=i, messages=chat(f"{PROMPTS[i % 3]} {i}"), n=2, temperature=1.0, seed=1,
                                  max_new_tokens=4 if i % 2 else 40) for i in range(12)]
    stored = []
    results = engine.generate(requests, on_result=stored.append, should_stop=should_stop)
    assert len(asked) == 7 and results == stored  # it returned at the first yes
    assert 0 < len(results) < 24 and all(r.finish_reason in {"stop", "length"} for r in results)
    assert all(r.tokens <= 4 or r.finish_reason == "stop" for r in results)  # long ones were cut short: dropped


def test_a_prefill_in_pieces_gives_the_same_greedy_answers_and_can_be_stopped_between_them(engine, monkeypatch):
    """A chunk of prompts longer than PREFILL_TOKENS is prefilled in pieces joined as refills are: the same
    greedy tokens as one piece, and a stop asked between pieces returns before any decoding."""
    from selfalign.engines import transformers_engine

    requests = [GenerationRequest(key=i, messages=chat(f"{PROMPTS[i % 3]} {'more ' * i}"), n=2, temperature=0.0,
                                  max_new_tokens=3 + 2 * (i % 3)) for i in range(4)]
    whole = _by_key(engine.generate(requests))
    pieces = []
    split = transformers_engine.TransformersEngine._pieces
    monkeypatch.setattr(transformers_engine.TransformersEngine, "_pieces",
                        lambda self, chunk: pieces.append(split(self, chunk)) or pieces[-1])
    monkeypatch.setattr(transformers_engine, "PREFILL_TOKENS", 40)  # one or two prompts a piece
    in_pieces = _by_key(engine.generate(requests))
    assert max(len(p) for p in pieces) > 1
    assert in_pieces.keys() == whole.keys()
    for key, r in whole.items():
        assert (in_pieces[key].text, in_pieces[key].tokens, in_pieces[key].finish_reason) == \
            (r.text, r.tokens, r.finish_reason)
        assert in_pieces[key].mean_logprob == pytest.approx(r.mean_logprob, abs=1e-4)
    monkeypatch.setattr(transformers_engine, "STOP_CHECK_S", 0.0)
    asked = []
    assert engine.generate(requests, should_stop=lambda: asked.append(1) or True) == []
    assert asked == [1]  # asked after the first piece, before the second


def test_onednn_linear_layers_give_the_same_greedy_answers_as_torchs(engine, tmp_path):
    """The sampling copy calls oneDNN for every linear layer on a CPU (the base's weights borrowed and
    reordered, or plain with reorder_base off; reordered ones for a merged adapter): the same greedy tokens,
    log-probs within float noise, and the base's own modules and weights as they were once it is asked
    for (the trainer shares them)."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn

    from selfalign.engines.onednn_linear import OneDnnLinear

    engine.release_memory()
    original = {k: v.clone() for k, v in engine.base.state_dict().items()}
    peft_model = get_peft_model(copy.deepcopy(engine.base), LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    requests = [GenerationRequest(key=i, messages=chat(p), n=1, temperature=0.0, max_new_tokens=10)
                for i, p in enumerate(PROMPTS)]
    answers = {}
    for onednn in (True, "reorder_base", False):
        engine.onednn, engine.reorder_base = bool(onednn), onednn == "reorder_base"
        engine.release_memory()
        try:
            for adapter in (None, str(tmp_path / "adapter")):
                answers[onednn, adapter] = _by_key(engine.generate(requests, adapter=adapter))
                swapped = [m for m in engine.model.modules() if isinstance(m, OneDnnLinear)]
                assert bool(swapped) == bool(onednn)
                if swapped:  # a merged adapter's weights are reordered into oneDNN's layout, the base's on request
                    assert any(m.weight.is_mkldnn for m in swapped) == bool(adapter or engine.reorder_base)
                # borrowed: while the base samples reordered, its own plain weights are empty (one model's memory)
                emptied = [m for m in engine._base.modules() if type(m) is nn.Linear and m.weight.numel() == 0]
                assert bool(emptied) == engine.reorder_base  # an adapter is merged into them, in place
        finally:
            engine.onednn, engine.reorder_base = True, True
            engine.release_memory()
    assert all(type(m) is not OneDnnLinear for m in engine.base.modules())
    assert any(type(m) is nn.Linear for m in engine.base.modules())
    after = engine.base.state_dict()
    assert after.keys() == original.keys() and all(torch.equal(after[k], v) for k, v in original.items())
    assert all(not p.is_inference() for p in engine.base.parameters())  # the trainer can save them for backward
    for onednn, adapter in [(o, a) for o in (True, "reorder_base") for a in (None, str(tmp_path / "adapter"))]:
        ours, torchs = answers[onednn, adapter], answers[False, adapter]
        assert ours.keys() == torchs.keys()
        for key, r in torchs.items():
            assert (ours[key].text, ours[key].tokens) == (r.text, r.tokens)
            assert ours[key].mean_logprob == pytest.approx(r.mean_logprob, abs=1e-3)


def test_the_kv_cache_budget_admits_fewer_rows_and_gives_the_same_greedy_answers(engine, monkeypatch):
    """With cache_mib, waiting prompts join only while the batch's reserved KV cache stays under it: fewer
    rows per step, and the same greedy tokens and log-probs as without a budget."""
    from selfalign.engines import decode_batch, kv_cache

    per_token = kv_cache.bytes_per_token(engine.base)
    requests = [GenerationRequest(key=i, messages=chat(f"{PROMPTS[i % 3]} {i}"), n=2, temperature=0.0,
                                  max_new_tokens=3 + 5 * (i % 3)) for i in range(8)]
    admitted = []  # (rows, width) of a batch just after rows joined it
    absorb = decode_batch.Batch.absorb

    def watch(self, fresh):
        merged = absorb(self, fresh)
        admitted.append((len(merged.live), merged.width()))
        return merged

    monkeypatch.setattr(decode_batch.Batch, "absorb", watch)
    free = _by_key(engine.generate(requests))
    most_free = max(rows for rows, _ in admitted)
    admitted.clear()
    budget_rows = 5
    width = max(len(engine.prompt_ids(r.messages)) for r in requests) + max(r.max_new_tokens for r in requests)
    budget = budget_rows * (width + kv_cache.RESERVE_TOKENS) * per_token
    engine.cache_mib = budget / 2**20
    try:
        capped = _by_key(engine.generate(requests))
    finally:
        engine.cache_mib = None
    assert admitted and most_free > budget_rows + 1
    for rows, columns in admitted:  # every join stayed inside the budget
        assert rows * (columns + kv_cache.RESERVE_TOKENS) * per_token <= budget
    assert capped.keys() == free.keys() and len(capped) == 16
    for key, r in free.items():
        assert (capped[key].text, capped[key].tokens, capped[key].finish_reason) == (r.text, r.tokens, r.finish_reason)
        assert capped[key].mean_logprob == pytest.approx(r.mean_logprob, abs=1e-4)


def test_bytes_per_token_is_what_the_cache_holds(engine):
    from selfalign.engines import decode_batch, kv_cache

    request = GenerationRequest(key=0, messages=chat(PROMPTS[1]), n=3, temperature=0.0, max_new_tokens=2)
    engine._use(None)
    batch = engine._prefill_piece([(request, engine.prompt_ids(request.messages))], [])
    assert isinstance(batch, decode_batch.Batch)
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in batch.cache.layers)
    assert held == kv_cache.bytes_per_token(engine.base) * 3 * batch.width()
