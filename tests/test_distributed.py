"""Data-parallel training on CPU: two real processes (gloo) started by `accelerate launch` or torchrun.

Two processes with batch b must take the same optimizer steps as one process with batch b and two
accumulated micro-batches: the same batches, the same summed gradients."""

import pytest
import torch
from test_loop import make_run
from test_trainer import TRAIN_SETS, examples, lora_state, train_cfg

from selfalign import config, loop, models, verifiers
from selfalign.errors import EXIT_OK
from selfalign.store import open_store
from selfalign.training import distributed
from selfalign.training.trainer import StopTraining, TrainJob, train

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def job(tmp_path, tiny_model_dir, data, **train_sets):
    sets = [f"model.name={tiny_model_dir}", "run.device=cpu", *TRAIN_SETS, "train.processes=2",
            *(f"train.{k}={v}" for k, v in train_sets.items())]
    cfg = config.build(sets=sets)
    out = tmp_path / "round"
    folder = distributed.write_job(out / "distributed", data, cfg, seed=7, out_dir=out,
                                   init_adapter=None, reference_adapter=None)
    return cfg, folder, out


@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_two_processes_train_what_one_process_with_accumulation_trains(tmp_path, tiny_model_dir, launcher):
    data = examples(n=14)
    cfg, folder, out = job(tmp_path, tiny_model_dir, data, launcher=f'"{launcher}"')
    steps = []
    distributed.launch(folder, cfg, on_step=steps.append, should_stop=lambda: False, log_path=tmp_path / "log.txt")
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "reference.pt").is_file()

    model, tok = models.load(str(tiny_model_dir), device="cpu")
    single_steps = []
    single = train(model, TrainJob(data, train_cfg(grad_accum=2), tmp_path / "single", pad_id=tok.pad_token_id, seed=7),
                   on_step=single_steps.append)
    # 14 examples in batches of 4 -> 4 batches, two per step -> 2 steps per epoch, 3 epochs
    assert [s.step for s in steps] == list(range(6)) == [s.step for s in single_steps]
    for ours, theirs in zip(steps, single_steps, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, abs=1e-4)
        assert ours.reward_margin == pytest.approx(theirs.reward_margin, abs=1e-4)
        assert ours.grad_norm == pytest.approx(theirs.grad_norm, rel=1e-3)
    assert torch.equal(torch.load(out / "reference.pt"), torch.load(tmp_path / "single" / "reference.pt"))
    a, b = lora_state(out / "adapter"), lora_state(single)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert steps[-1].loss < steps[0].loss  # and it learned


def test_a_stop_reaches_every_process_and_a_failure_is_one_line(tmp_path, tiny_model_dir):
    cfg, folder, out = job(tmp_path, tiny_model_dir, examples(n=14), epochs=2000)  # minutes, unless stopped
    steps = []
    with pytest.raises(StopTraining):
        distributed.launch(folder, cfg, on_step=steps.append, should_stop=lambda: len(steps) >= 2,
                           log_path=tmp_path / "log.txt")
    assert 2 <= len(steps) < 4000 and not (out / "adapter").exists()

    broken = config.build(sets=["model.name=" + str(tmp_path / "no-such-model"), "train.processes=2"])
    config.save(broken, folder / "config.toml")
    with pytest.raises(distributed.DistributedTrainingError) as failure:
        distributed.launch(folder, broken, on_step=steps.append, should_stop=lambda: False,
                           log_path=tmp_path / "log2.txt")
    message = str(failure.value)
    assert "2-process train stage failed" in message and "train.processes=1" in message
    assert "\n" not in message and "no-such-model" in message


def test_a_round_of_the_loop_with_two_training_processes(tiny_model_dir, runs_root):
    folder = make_run(tiny_model_dir, "dp", "self-reward", "run.rounds=1", "train.processes=2",
                      "train.launcher=\"torchrun\"", "run.device=cpu")
    assert loop.run(folder, quiet=True) == EXIT_OK
    with open_store(folder.db_path) as store:
        steps = store.train_steps(1)
        assert steps and [s.step for s in steps] == list(range(len(steps)))
        assert store.stages(1) and all(s.status == "done" for s in store.stages(1))
        assert any("2 processes under torchrun" in e.message for e in store.events())
        assert "eval/csr_instruction" in store.metrics(1)[1]
    assert (folder.adapter_dir(1) / "adapter_model.safetensors").is_file()
    assert (folder.path / "logs" / "round-1-train-processes.txt").is_file()

    # Building the examples needs only a tokenizer: behind a vLLM engine (which has one and no
    # transformers model) this process loads no model copy and builds the same token ids.
    from types import SimpleNamespace

    from selfalign.engines.transformers_engine import TransformersEngine
    from selfalign.engines.vllm_engine import VLLMEngine
    from selfalign.stages import StageContext
    from selfalign.stages import train as train_stage

    cfg = config.load(folder.config_path)
    engine = TransformersEngine.load(str(tiny_model_dir), device="cpu")
    with open_store(folder.db_path) as store:
        full = train_stage.build_examples(StageContext(cfg, store, engine, round=1, run_dir=folder.path))
        # the real vLLM engine class around a stand-in for vllm.LLM that only has the tokenizer
        vllm_like = VLLMEngine(SimpleNamespace(get_tokenizer=lambda: engine.tokenizer))
        light = train_stage.build_examples(StageContext(cfg, store, vllm_like, round=1, run_dir=folder.path))
    assert light == full and full and vllm_like.trainable is None  # no transformers copy was loaded
    # each pair says whether R-DPO's length term applies to it, by train.length_margin_on and its rejected answer
    with open_store(folder.db_path) as store:
        rows = {r.id: r for r in store.responses(round=1)}
        rejected = [rows[p.rejected_id] for p in store.pairs(1) if p.rejected_id is not None]
        rules = {"all": lambda r: True, "finished": lambda r: verifiers.finished_cleanly(r.text, r.finish_reason),
                 "unless-loop": lambda r: not verifiers.degenerate(r.text)}
        for on, rule in rules.items():
            cfg.train.length_margin_on = on
            built = train_stage.build_examples(StageContext(cfg, store, engine, round=1, run_dir=folder.path))
            assert [e.length_term for e in built] == [rule(r) for r in rejected], on


def test_the_loop_itself_refuses_to_run_under_a_launcher(runs_root):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "selfalign", "run", "any", "--headless"], capture_output=True,
                          text=True, env=os.environ | {"WORLD_SIZE": "2"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "train.processes=N" in done.stderr
