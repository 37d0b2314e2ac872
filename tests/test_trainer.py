"""The LoRA trainer on the tiny model: it learns, touches only LoRA weights, and resumes exactly."""

import random

import pytest
import torch

from selfalign import config, models
from selfalign.training.logps import response_logps
from selfalign.training.trainer import Example, StopTraining, TrainJob, train


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return models.load(str(tiny_model_dir), device="cpu")


def examples(n=12, seed=0, ranked=False):
    rng = random.Random(seed)

    def ids(k):
        return [rng.randrange(5, 400) for _ in range(k)]

    if ranked:
        return [Example(ids(6), [], ranked=[ids(rng.randint(3, 6)) for _ in range(3)]) for _ in range(n)]
    return [Example(ids(rng.randint(4, 10)), ids(rng.randint(3, 8)), ids(rng.randint(3, 8))) for _ in range(n)]


# small fast steps on the plain losses: tests that want the SFT term or R-DPO's length term (both on in the
# default recipe) set them; test_distributed trains with the same settings in two processes
TRAIN_SETS = ["train.batch_size=4", "train.epochs=3", "train.learning_rate=0.005", "train.lora_r=4",
              "train.lora_alpha=8", "train.warmup_ratio=0.0", "train.lora_dropout=0.0",
              "train.sft_weight=0.0", "train.length_margin=0.0"]


def train_cfg(**overrides):
    sets = TRAIN_SETS + [f"train.{k}={v}" for k, v in overrides.items()]
    return config.build(sets=sets, recipe="isheep" if overrides.get("loss") == '"sft"' else None).train


def lora_state(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_dpo_learns_and_only_lora_weights_change(tiny, tmp_path):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []
    adapter = train(model, TrainJob(examples(), train_cfg(), tmp_path, pad_id=tok.pad_token_id), on_step=steps.append)
    assert (adapter / "adapter_config.json").is_file()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # base untouched
    weights = lora_state(adapter)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at zero
    assert len(steps) == 9 and [s.step for s in steps] == list(range(9))
    assert steps[-1].loss < steps[0].loss and steps[-1].reward_margin > 0
    assert all(s.tokens_per_s > 0 and s.grad_norm >= 0 for s in steps)
    assert (tmp_path / "reference.pt").is_file() and not (tmp_path / "checkpoint").exists()
    assert all(p.requires_grad for p in model.parameters())  # peft froze the shared weights only while training


def test_the_training_copy_shares_the_base_weights_and_not_the_modules(tiny):
    from selfalign.training.trainer import sharing_copy

    model, _ = tiny
    twin = sharing_copy(model)
    assert twin is not model and twin.model.layers[0].self_attn is not model.model.layers[0].self_attn
    assert all(a is b for a, b in zip(twin.parameters(), model.parameters(), strict=True))
    assert twin.get_output_embeddings().weight is twin.get_input_embeddings().weight  # still tied
    twin.model.layers[0].self_attn.q_proj = torch.nn.Identity()  # what LoRA injection does to the copy
    assert isinstance(model.model.layers[0].self_attn.q_proj, torch.nn.Linear)


@pytest.mark.parametrize("loss", ["ipo", "ln-dpo", "ld-dpo", "sft", "rrhf"])
def test_other_losses_train(tiny, tmp_path, loss):
    model, tok = tiny
    steps = []
    data = examples(ranked=loss == "rrhf")
    if loss == "sft":
        data = [Example(e.prompt, e.chosen) for e in data]
    train(model, TrainJob(data, train_cfg(loss=f'"{loss}"'), tmp_path, pad_id=tok.pad_token_id), on_step=steps.append)
    assert steps[-1].loss < steps[0].loss


def test_ld_dpo_is_dpo_at_alpha_1_and_differs_below_it(tiny, tmp_path):
    """LD-DPO at ld_alpha 1 counts every token whole: the same step losses as DPO; at 0 the pairs' unequal
    lengths (3-8 tokens each) make the losses differ."""
    model, tok = tiny
    runs = {}
    for name, overrides in {"dpo": {}, "ld1": {"loss": '"ld-dpo"', "ld_alpha": 1.0},
                            "ld0": {"loss": '"ld-dpo"', "ld_alpha": 0.0}}.items():
        steps = []
        train(model, TrainJob(examples(), train_cfg(epochs=1, **overrides), tmp_path / name, pad_id=tok.pad_token_id),
              on_step=steps.append)
        runs[name] = [s.loss for s in steps]
    assert runs["ld1"] == pytest.approx(runs["dpo"], abs=1e-5)
    assert runs["ld0"] != pytest.approx(runs["dpo"], abs=1e-3)


def test_length_margin_changes_dpo_only_where_lengths_differ(tiny, tmp_path):
    """R-DPO's length term: with pairs of unequal lengths the step losses move away from DPO's; with
    each pair's answers of equal length (the same tokens count either side) they are DPO's exactly."""
    model, tok = tiny
    rng = random.Random(3)
    equal = [Example(e.prompt, e.chosen, [rng.randrange(5, 400) for _ in e.chosen]) for e in examples()]
    runs = {}
    for name, data, overrides in [("dpo", examples(), {}), ("r", examples(), {"length_margin": 0.05}),
                                  ("dpo_eq", equal, {}), ("r_eq", equal, {"length_margin": 0.05})]:
        steps = []
        train(model, TrainJob(data, train_cfg(epochs=1, **overrides), tmp_path / name, pad_id=tok.pad_token_id),
              on_step=steps.append)
        runs[name] = [s.loss for s in steps]
    assert runs["r"] != pytest.approx(runs["dpo"], abs=1e-3)
    assert runs["r_eq"] == pytest.approx(runs["dpo_eq"], abs=1e-5)


def test_a_pair_without_the_length_term_keeps_dpos_full_pull(tiny, tmp_path):
    """train.length_margin_on decides per pair (the train stage sets Example.length_term): with the term
    off on every pair the steps are plain DPO's, with it on every pair they are R-DPO's, and the trainer
    does not apply the setting's rule a second time (r_fin: the rule set, every pair's term on)."""
    model, tok = tiny
    exempt = [Example(e.prompt, e.chosen, e.rejected, length_term=False) for e in examples()]
    runs = {}
    for name, data, overrides in [("dpo", examples(), {}), ("r_all", examples(), {"length_margin": 0.05}),
                                  ("r_fin", examples(), {"length_margin": 0.05, "length_margin_on": '"finished"'}),
                                  ("r_unfin", exempt, {"length_margin": 0.05})]:
        steps = []
        train(model, TrainJob(data, train_cfg(epochs=1, **overrides), tmp_path / name, pad_id=tok.pad_token_id),
              on_step=steps.append)
        runs[name] = [s.loss for s in steps]
    assert runs["r_fin"] == pytest.approx(runs["r_all"], abs=1e-5)
    assert runs["r_unfin"] == pytest.approx(runs["dpo"], abs=1e-5)
    assert runs["r_unfin"] != pytest.approx(runs["r_all"], abs=1e-3)


def test_a_stop_during_the_reference_pass_stops_before_any_step(tiny, tmp_path):
    """The reference log-probs take minutes on a CPU: a stop request must not wait for them."""
    model, tok = tiny
    steps, asked = [], []
    with pytest.raises(StopTraining):
        train(model, TrainJob(examples(), train_cfg(batch_size=1), tmp_path, pad_id=tok.pad_token_id),
              on_step=steps.append, should_stop=lambda: asked.append(1) or len(asked) == 2)
    assert not steps and len(asked) == 2  # asked again after the first reference batch, then stopped
    assert not (tmp_path / "reference.pt").exists()  # a resumed round computes it whole


def test_resume_after_a_stop_reaches_the_same_adapter(tiny, tmp_path):
    model, tok = tiny
    cfg = train_cfg(epochs=4)
    whole = train(model, TrainJob(examples(), cfg, tmp_path / "a", pad_id=tok.pad_token_id, checkpoint_every=2))
    done = []
    with pytest.raises(StopTraining):
        train(model, TrainJob(examples(), cfg, tmp_path / "b", pad_id=tok.pad_token_id, checkpoint_every=2),
              on_step=done.append, should_stop=lambda: len(done) == 7)
    assert (tmp_path / "b" / "checkpoint" / "state.pt").is_file()
    resumed_steps = []
    resumed = train(model, TrainJob(examples(), cfg, tmp_path / "b", pad_id=tok.pad_token_id, checkpoint_every=2),
                    on_step=resumed_steps.append)
    assert resumed_steps[0].step == 6  # continued from the checkpoint at step 6
    a, b = lora_state(whole), lora_state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_continuing_from_an_adapter_with_the_previous_policy_as_reference(tiny, tmp_path):
    model, tok = tiny
    first = train(model, TrainJob(examples(), train_cfg(epochs=1), tmp_path / "r1", pad_id=tok.pad_token_id))
    steps = []
    train(model, TrainJob(examples(seed=1), train_cfg(epochs=1), tmp_path / "r2", pad_id=tok.pad_token_id,
                          init_adapter=str(first), reference_adapter=str(first)), on_step=steps.append)
    assert abs(steps[0].reward_margin) < 1e-4  # before any step the policy equals its reference


def test_response_logps_match_a_plain_forward(tiny):
    model, _ = tiny
    prompt, response = [5, 6, 7, 8], [9, 10, 11]
    logps, mask = response_logps(model, [(prompt, response), ([5, 6], [12])], pad_id=0, max_length=64)
    with torch.no_grad():
        full = model(torch.tensor([prompt + response])).logits.log_softmax(-1)[0]
    expected = torch.stack([full[3 + i, t] for i, t in enumerate(response)])
    assert torch.allclose(logps[0, :3].detach(), expected, atol=1e-5)
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


KILLABLE = """
import sys, random
sys.path.insert(0, sys.argv[3])
from test_trainer import examples, train_cfg
from selfalign import models
from selfalign.training.trainer import TrainJob, train
model, tok = models.load(sys.argv[1], device="cpu")
train(model, TrainJob(examples(), train_cfg(epochs=4), sys.argv[2], pad_id=tok.pad_token_id, checkpoint_every=2),
      on_step=lambda s: print("step", s.step, flush=True))
print("finished", flush=True)
"""


def test_sigkill_mid_train_then_resume_matches_an_uninterrupted_run(tiny, tiny_model_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    model, tok = tiny
    whole = train(model, TrainJob(examples(), train_cfg(epochs=4), tmp_path / "a", pad_id=tok.pad_token_id,
                                  checkpoint_every=2))
    args = [sys.executable, "-c", KILLABLE, str(tiny_model_dir), str(tmp_path / "b"), str(Path(__file__).parent)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip() == "step 5":
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert (tmp_path / "b" / "checkpoint").is_dir() and not (tmp_path / "b" / "adapter").exists()
    done = subprocess.run(args, capture_output=True, text=True)
    assert "finished" in done.stdout, done.stderr
    assert done.stdout.split()[1] == "4"  # resumed at the checkpoint after step 3
    a, b = lora_state(whole), lora_state(tmp_path / "b" / "adapter")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_splitting_batches_by_tokens_takes_the_same_steps(tiny, tmp_path):
    from selfalign.training.batching import split

    data = examples()
    sizes = [sum(len(e.prompt) + len(s) for s in e.sequences()) for e in data]
    pieces = split(list(range(6)), data, 40)
    assert [i for piece in pieces for i in piece] == list(range(6)) and len(pieces) > 1
    assert all(len(p) == 1 or sum(sizes[i] for i in p) <= 40 for p in pieces)
    assert split([0, 1], data, 0) == [[0, 1]] and split([0], data, 1) == [[0]]

    model, tok = tiny
    runs = {}
    # 0: the whole batch at once; 30: pieces within the budget; 8: every example alone, over the
    # budget, so its activations are recomputed in the backward pass
    for budget in (0, 30, 8):
        steps = []
        adapter = train(model, TrainJob(data, train_cfg(micro_batch_tokens=budget), tmp_path / str(budget),
                                        pad_id=tok.pad_token_id), on_step=steps.append)
        runs[budget] = ([s.loss for s in steps], lora_state(adapter))
    for budget in (30, 8):
        assert runs[budget][0] == pytest.approx(runs[0][0], abs=1e-5)
        assert all(torch.allclose(runs[0][1][k], runs[budget][1][k], atol=1e-5) for k in runs[0][1])


def test_recomputing_activations_gives_the_same_gradients_and_holds_less(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from selfalign.training.trainer import _loss, _recompute_switch, over_budget, sharing_copy

    base, tok = models.load(str(tiny_model_dir), device="cpu")
    cfg = train_cfg(lora_dropout=0.2, micro_batch_tokens=8)  # dropout: the recompute must replay its draws
    model = get_peft_model(sharing_copy(base), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2,
                                                          target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))
    model.train()
    switch = _recompute_switch(model, cfg)
    batch = examples(2, seed=3)
    assert over_budget(batch[:1], cfg) and not over_budget(batch[:1], train_cfg(micro_batch_tokens=0))
    results = {}
    for on in (False, True):
        switch(on)
        model.zero_grad()
        torch.manual_seed(0)
        saved: list[int] = []

        def count(t, saved=saved):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
            loss, _, _ = _loss(model, batch, torch.zeros(2, 4), cfg, tok.pad_token_id)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results[on] = float(loss.detach()), grads, sum(saved)
    (loss_kept, grads_kept, held_kept), (loss_re, grads_re, held_re) = results[False], results[True]
    assert loss_re == pytest.approx(loss_kept, abs=1e-6)
    assert all(torch.allclose(grads_kept[n], grads_re[n], atol=1e-6) for n in grads_kept)
    assert any(float(g.abs().sum()) > 0 for g in grads_re.values())
    assert held_re < held_kept / 2, (held_re, held_kept)


def test_sft_weight_adds_the_chosen_answers_negative_log_likelihood(tiny):
    """RPO: the DPO loss plus sft_weight times the chosen answers' mean per-token NLL, by hand."""
    from selfalign.training.trainer import _loss

    model, tok = tiny
    batch = examples(n=4, seed=3)
    reference = torch.zeros(len(batch), 4)
    plain, _, _ = _loss(model, batch, reference, train_cfg(), tok.pad_token_id)
    mixed, _, _ = _loss(model, batch, reference, train_cfg(sft_weight=0.5), tok.pad_token_id)
    logps, mask = response_logps(model, [(ex.prompt, ex.chosen) for ex in batch], tok.pad_token_id, 512)
    nll = -((logps * mask).sum(1) / mask.sum(1)).mean()
    assert float(mixed - plain) == pytest.approx(0.5 * float(nll), rel=1e-4)


def test_sft_weight_keeps_the_chosen_answer_likely(tiny, tmp_path):
    model, tok = tiny
    data = examples(n=8, seed=5)

    def chosen_logp(adapter):
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(model, str(adapter))
        with torch.no_grad():
            logps, mask = response_logps(tuned, [(ex.prompt, ex.chosen) for ex in data], tok.pad_token_id, 512)
        tuned.unload()
        return float((logps * mask).sum() / mask.sum())

    dpo_only = train(model, TrainJob(data, train_cfg(), tmp_path / "dpo", pad_id=tok.pad_token_id))
    rpo = train(model, TrainJob(data, train_cfg(sft_weight=1.0), tmp_path / "rpo", pad_id=tok.pad_token_id))
    assert chosen_logp(rpo) > chosen_logp(dpo_only)


def _logps_and_grads(model, items, packed, max_length=64):
    model.zero_grad(set_to_none=True)
    logps, mask = response_logps(model, items, 0, max_length, packed)
    (logps * mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logps.detach(), mask, grads


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_give_the_same_log_probs_and_gradients(tiny_model_dir, attention):
    """A prompt's responses share one row (the prompt once, a mask per response): the same numbers as one
    padded row per response, for pairs, a ranked triple, and an item that must be truncated."""
    model, _ = models.load(str(tiny_model_dir), device="cpu")
    model.set_attn_implementation(attention)
    rng = random.Random(7)

    def ids(k):
        return [rng.randrange(5, 400) for _ in range(k)]

    p1, p2, p3 = ids(9), ids(4), ids(30)
    items = [(p1, ids(5)), (p1, ids(11)), (p2, ids(3)), (p2, ids(7)), (p2, ids(1)), (p3, ids(12)), (p3, ids(40))]
    plain, plain_mask, plain_grads = _logps_and_grads(model, items, packed=False)
    packed, packed_mask, packed_grads = _logps_and_grads(model, items, packed=True)
    assert torch.equal(plain_mask, packed_mask)
    assert torch.allclose(plain, packed, atol=1e-5)
    assert plain_grads.keys() == packed_grads.keys() and plain_grads
    assert all(torch.allclose(plain_grads[n], packed_grads[n], atol=1e-4, rtol=1e-4) for n in plain_grads)


def test_packed_rows_take_fewer_positions():
    from selfalign.training.logps import _rows

    rows = _rows([([1, 2, 3], [4, 5]), ([1, 2, 3], [6]), ([7], [8])], max_length=64, packed=True)
    assert [r.tokens for r in rows] == [[1, 2, 3, 4, 5, 6], [7, 8]]
    assert [r.positions for r in rows] == [[0, 1, 2, 3, 4, 3], [0, 1]]
    assert [r.segments for r in rows] == [[0, 0, 0, 1, 1, 2], [0, 1]]
    # the second response would lose prompt tokens to max_length, so it gets a row of its own
    rows = _rows([([1, 2, 3], [4]), ([1, 2, 3], [5, 6, 7])], max_length=5, packed=True)
    assert [r.tokens for r in rows] == [[1, 2, 3, 4], [2, 3, 5, 6, 7]]


def test_training_packed_and_unpacked_reaches_the_same_adapter(tiny, tmp_path):
    model, tok = tiny
    data = examples(n=6, seed=2)
    steps = {True: [], False: []}
    adapters = {packing: train(model, TrainJob(data, train_cfg(batch_size=6, epochs=2, micro_batch_tokens=0,
                                                          packing=str(packing).lower()),
                                               tmp_path / str(packing), pad_id=tok.pad_token_id),
                               on_step=steps[packing].append)
                for packing in (True, False)}
    assert [s.loss for s in steps[True]] == pytest.approx([s.loss for s in steps[False]], abs=1e-5)
    a, b = lora_state(adapters[True]), lora_state(adapters[False])
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
