"""An adapter merged into the base's own weights for sampling (engines/sampling_copy.py): the same answers
as a merged copy of the base, and the base given back bit for bit, also when the merge fails midway."""

import copy
import os

import pytest

from selfalign import models
from selfalign.engines.base import GenerationRequest
from selfalign.engines.transformers_engine import TransformersEngine

PROMPTS = ["Hi.", "Write a haiku about rain and the river in the city.", "List three fruits, then stop."]


@pytest.fixture
def engine(tiny_model_dir):
    model, tok = models.load(str(tiny_model_dir), device="cpu")
    return TransformersEngine(model, tok, batch_size=8, max_context=256)


@pytest.fixture
def adapter(engine, tmp_path):
    from peft import LoraConfig, get_peft_model

    # large, random LoRA weights: a merge changes every targeted weight in its low bits as well as its high ones
    peft_model = get_peft_model(copy.deepcopy(engine.base), LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    return str(tmp_path / "adapter")


def requests():
    greedy = [GenerationRequest(key=i, messages=[{"role": "user", "content": p}], temperature=0.0, max_new_tokens=10)
              for i, p in enumerate(PROMPTS)]
    return greedy + [GenerationRequest(key=9, messages=[{"role": "user", "content": PROMPTS[1]}], n=3, seed=5,
                                       temperature=1.0, max_new_tokens=10)]


def answers(results):
    return {(r.key, r.sample_index): (r.text, r.tokens, r.mean_logprob) for r in results}


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [p.requires_grad for p in model.parameters()]


def same_weights(model, before) -> bool:
    import torch

    weights, flags = before
    after = model.state_dict()
    return (after.keys() == weights.keys() and all(torch.equal(after[k], v) for k, v in weights.items())
            and [p.requires_grad for p in model.parameters()] == flags)


def test_merged_in_place_samples_what_a_merged_copy_samples_and_the_base_comes_back_bit_for_bit(engine, adapter):
    from torch import nn

    before = snapshot(engine.base)
    base_answers = answers(engine.generate(requests()))
    engine.merge_in_place = False
    copied = answers(engine.generate(requests(), adapter=adapter))
    assert engine._spill is None
    engine.release_memory()
    assert same_weights(engine.base, before)

    engine.merge_in_place = True
    files = sorted(os.listdir(adapter))
    merged = answers(engine.generate(requests(), adapter=adapter))
    assert engine._spill is not None and len(engine._spill.params) == 3 * 2  # q, v, down in 2 layers
    # one model's memory: the base's linear weights are lent to the sampling copy (empty here)
    assert all(m.weight.numel() == 0 for m in engine._base.modules() if type(m) is nn.Linear
               and m.weight is not engine._base.get_input_embeddings().weight)
    assert sorted(os.listdir(adapter)) == files  # the spill file has no name: nothing to leave behind
    assert merged == copied  # the same merged values, so the same tokens and log-probs exactly
    assert merged != base_answers

    engine.release_memory()
    assert same_weights(engine.base, before)  # exactly the loaded weights, not W + d - d
    assert answers(engine.generate(requests())) == base_answers
    # again, after the base sampled: the same merge, the same answers
    assert answers(engine.generate(requests(), adapter=adapter)) == copied
    assert same_weights(engine.base, before)  # asking for the base gives its weights back


def test_a_merge_that_fails_midway_leaves_the_base_as_it_was(engine, adapter, monkeypatch):
    import torch
    from peft.tuners.lora import LoraModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    before = snapshot(engine.base)
    half_merged = []

    def merge_one_then_fail(self, *args, **kwargs):
        layer = next(m for m in self.modules() if isinstance(m, BaseTunerLayer))
        layer.merge()
        half_merged.append(not all(torch.equal(v, before[0][k]) for k, v in engine._base.state_dict().items()))
        raise RuntimeError("disk full")

    monkeypatch.setattr(LoraModel, "merge_and_unload", merge_one_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        engine.generate(requests(), adapter=adapter)
    assert half_merged == [True]  # the base's own weights had changed when it failed
    assert engine._spill is None and engine.model is None
    assert same_weights(engine.base, before)


def test_a_full_disk_before_the_merge_leaves_the_base_as_it_was_and_says_so(engine, adapter, monkeypatch):
    import errno

    from selfalign.engines import sampling_copy
    from selfalign.errors import disk_full

    before = snapshot(engine.base)
    base_answers = answers(engine.generate(requests()))
    opened = []

    def device_that_is_always_full(dir=None):  # noqa: A002 (tempfile's own keyword)
        opened.append(open("/dev/full", "w+b"))  # noqa: SIM115 (Spill owns it): every write fails with ENOSPC
        return opened[-1]

    monkeypatch.setattr(sampling_copy.tempfile, "TemporaryFile", device_that_is_always_full)
    with pytest.raises(OSError) as failure:
        engine.generate(requests(), adapter=adapter)
    assert failure.value.errno == errno.ENOSPC
    assert "the disk is full" in str(disk_full(failure.value))
    assert opened and opened[0].closed
    assert engine._spill is None and same_weights(engine.base, before)
    monkeypatch.undo()
    assert answers(engine.generate(requests())) == base_answers
