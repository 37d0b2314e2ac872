"""CUDA paths on the tiny model; skipped where there is no GPU (CI has none)."""

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_engine_samples_on_cuda_in_bf16(tiny_model_dir):
    from selfalign.engines.base import GenerationRequest
    from selfalign.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine.load(str(tiny_model_dir), device="cuda", batch_size=8)
    assert engine.device.type == "cuda" and engine.base.dtype == torch.bfloat16
    requests = [GenerationRequest(key=i, messages=[{"role": "user", "content": p}], n=3, max_new_tokens=8,
                                  temperature=1.0) for i, p in enumerate(["Hi.", "Write a long poem about rain."])]
    results = engine.generate(requests)
    assert len(results) == 6 and all(r.mean_logprob is None or r.mean_logprob < 0 for r in results)


def test_trainer_on_cuda_changes_only_lora(tiny_model_dir, tmp_path):
    from test_trainer import examples, lora_state, train_cfg

    from selfalign import models
    from selfalign.training.trainer import TrainJob, train

    model, tok = models.load(str(tiny_model_dir), device="cuda", dtype="float32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []
    adapter = train(model, TrainJob(examples(), train_cfg(), tmp_path, pad_id=tok.pad_token_id), on_step=steps.append)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora_state(adapter).items())
    assert steps[-1].loss < steps[0].loss


needs_vllm = pytest.mark.skipif(pytest.importorskip("importlib").util.find_spec("vllm") is None,
                                reason="needs vllm (pip install 'selfalign[gpu]')")


@needs_vllm
def test_vllm_engine_samples_switches_adapters_and_sleeps(tiny_model_dir, tmp_path):
    from test_trainer import examples, train_cfg

    from selfalign import models
    from selfalign.engines.base import GenerationRequest
    from selfalign.engines.vllm_engine import VLLMEngine
    from selfalign.training.trainer import TrainJob, train

    engine = VLLMEngine.load(str(tiny_model_dir), max_context=512, gpu_memory_utilization=0.3)
    requests = [GenerationRequest(key=i, messages=[{"role": "user", "content": p}], n=3, max_new_tokens=8,
                                  temperature=1.0, seed=i) for i, p in enumerate(["Hi.", "Write about rain."])]
    first = engine.generate(requests)
    assert len(first) == 6 and all(r.mean_logprob is None or r.mean_logprob <= 0 for r in first)
    again = engine.generate(requests)
    assert [r.text for r in again] == [r.text for r in first]  # seeds reproduce

    model, tok = models.load(str(tiny_model_dir), device="cuda", dtype="float32")
    engine.release_memory()  # the trainer gets the GPU
    adapter = train(model, TrainJob(examples(), train_cfg(), tmp_path, pad_id=tok.pad_token_id))
    tuned = engine.generate(requests, adapter=str(adapter))  # wakes up and samples through the LoRARequest
    assert len(tuned) == 6 and engine.lora is not None and not engine.asleep


def test_auto_engine_picks_vllm_with_cuda_and_vllm():
    from selfalign import config
    from selfalign.engines import select

    name, why = select.choose(config.build())
    has_vllm = pytest.importorskip("importlib").util.find_spec("vllm") is not None
    assert name == ("vllm" if has_vllm else "transformers") and why.startswith("auto:")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_train_what_one_gpu_with_accumulation_trains(tiny_model_dir, tmp_path):
    """nccl across two GPUs, started by accelerate launch; both sides under the same bf16 autocast, so
    agreement is to bf16 precision, not bit for bit."""
    from test_distributed import job
    from test_trainer import examples, lora_state, train_cfg

    from selfalign import config, models
    from selfalign.training import distributed
    from selfalign.training.trainer import TrainJob, train

    data = examples(n=14)
    cfg, folder, out = job(tmp_path, tiny_model_dir, data)
    cfg.run.device, cfg.model.dtype = "cuda", "float32"
    config.save(cfg, folder / "config.toml")
    steps = []
    distributed.launch(folder, cfg, on_step=steps.append, should_stop=lambda: False, log_path=tmp_path / "log.txt")
    model, tok = models.load(str(tiny_model_dir), device="cuda", dtype="float32")
    single = train(model, TrainJob(data, train_cfg(grad_accum=2), tmp_path / "single", pad_id=tok.pad_token_id, seed=7))
    a, b = lora_state(out / "adapter"), lora_state(single)
    assert all(torch.allclose(a[k], b[k], atol=2e-3) for k in a)
