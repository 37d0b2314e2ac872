"""Peak memory of sampling: the transformers engine's generate, one process per setting.

A round's generate stage is its largest sampling job (prompts x K samples at the answer budget), and at
320-token answers a real round's stage peaked at 9 GB. This runs the same kind of job in a child process
per setting and prints its peak resident memory (VmHWM, with the model loaded first and counted) and
tokens/s, so a memory lever is weighed against its speed. Prompts: the first N seed tasks, or the
training prompts a run stored for a round (with their constraint sentences, as the stage sends them);
--adapter samples through a merged adapter, as every round after the first does.
Settings, one lever added per row: the KV cache reserving room for the whole answer at once (as
before 2026-12-04) or RESERVE_TOKENS columns at a time; oneDNN's kernel caches at their 1,024 entries
or at onednn_linear.CACHE_ENTRIES; the base's weights plain or borrowed and reordered for oneDNN; the
weights left mapped from the safetensors file or copied out of it (models._own_weights); rows joining a
batch without a limit or only while its KV cache stays under generate.cache_mib; then two smaller budgets
(not cumulative: each against 2048; 1536 is the default since 2026-12-04), and 1536 with glibc's mmap
threshold fixed at 1 MiB, as the loop process runs since 2026-12-04 (freed buffers go back to the OS);
with --adapter, last, the adapter merged into the base's own weights instead of a copy of them
(engines/sampling_copy.py, the engine's way since 2026-12-04; every row before it merges into a copy).
(Two later changes are in every row: a prefill with one row per prompt no longer copies its cache, and
joined rows' caches are freed layer by layer.)

Run: .venv/bin/python benchmarks/generate_memory.py [--prompts 64] [--samples 4] [--max-new-tokens 320]
     [--run NAME --round K] [--adapter PATH] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PROMPTS = Path(__file__).resolve().parent.parent / "prompts" / "seed_tasks.jsonl"
# one lever added per row: the first is the engine as it was before 2026-12-04
OLD = {"reserve": 0, "cache": "1024", "reorder_base": False, "owned": False, "cache_mib": None}
NOW = {"reserve": 64, "cache": None, "reorder_base": True, "owned": True}  # every lever but the KV budget
SETTINGS = {
    "whole answer reserved, oneDNN caches 1024, plain base": OLD,
    "+ KV reserved 64 columns at a time": OLD | {"reserve": 64},
    "+ oneDNN caches of 64 kernels": OLD | {"reserve": 64, "cache": None},
    "+ base weights borrowed, reordered": OLD | {"reserve": 64, "cache": None, "reorder_base": True},
    "+ weights copied out of the mapped file": OLD | NOW,
    "+ KV cache under 2048 MiB": NOW | {"cache_mib": 2048},
    "KV cache under 1536 MiB (default)": NOW | {"cache_mib": 1536},
    "KV cache under 1024 MiB": NOW | {"cache_mib": 1024},
    "1536 MiB + glibc mmap threshold 1 MiB": NOW | {"cache_mib": 1536, "mmap_threshold": True},
    "+ adapter merged in place (the loop's)": NOW | {"cache_mib": 1536, "mmap_threshold": True, "in_place": True},
}


def prompts_of(args) -> list[str]:
    if not args.run:
        return [json.loads(line)["instruction"] for line in PROMPTS.read_text().splitlines()][: args.prompts]
    import sqlite3

    from selfalign import verifiers

    runs = Path(os.environ.get("SELFALIGN_RUNS", "runs"))
    db = sqlite3.connect(f"file:{runs / args.run / 'selfalign.db'}?mode=ro", uri=True)
    rows = db.execute("SELECT text, constraints FROM prompts WHERE round = ? AND split = 'train' ORDER BY id LIMIT ?",
                      (args.round, args.prompts)).fetchall()
    if not rows:
        sys.exit(f"run {args.run!r} has no training prompts for round {args.round}; pick a round it wrote")
    return [verifiers.attach(text, json.loads(constraints)) for text, constraints in rows]


def child(args, setting: dict) -> None:
    from selfalign import models
    from selfalign.engines import kv_cache
    from selfalign.engines.base import GenerationRequest
    from selfalign.engines.transformers_engine import TransformersEngine
    from selfalign.process import peak_memory_mib

    if setting["cache"]:  # before anything builds a oneDNN kernel (the module only sets what is unset)
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = os.environ["LRU_CACHE_CAPACITY"] = setting["cache"]
    if setting["reserve"]:
        kv_cache.RESERVE_TOKENS = setting["reserve"]
    else:
        kv_cache.RESERVE_TOKENS = args.max_new_tokens  # room for the whole answer at the prefill
    if setting.get("mmap_threshold"):  # what the loop process sets (process.hand_back_large_blocks)
        from selfalign.process import hand_back_large_blocks

        hand_back_large_blocks()
    if not setting["owned"]:
        models._own_weights = lambda model: None  # the weights stay views of the mapped safetensors file
    engine = TransformersEngine.load(args.model, batch_size=args.batch_size, reorder_base=setting["reorder_base"],
                                     cache_mib=setting["cache_mib"], merge_in_place=setting.get("in_place", False))
    requests = [GenerationRequest(key=i, messages=[{"role": "user", "content": t}], n=args.samples,
                                  max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.9, seed=0)
                for i, t in enumerate(prompts_of(args))]
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    start = time.perf_counter()
    results = engine.generate(requests, adapter=args.adapter)
    seconds = time.perf_counter() - start
    tokens = sum(r.tokens for r in results)
    print(json.dumps({"peak_mib": peak_memory_mib(), "loaded_mib": loaded, "tok_s": tokens / seconds,
                      "tokens": tokens, "rows": len(results)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--run", help="take the training prompts this run stored (SELFALIGN_RUNS or ./runs)")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--adapter", help="sample through this adapter, merged (a round folder's adapter/)")
    parser.add_argument("--only", action="append", choices=list(SETTINGS), help="run only this setting")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args, SETTINGS[args.child])
        return
    source = f"run {args.run} round {args.round}" if args.run else "seed tasks"
    print(f"{args.prompts} prompts ({source}) x {args.samples} samples x {args.max_new_tokens} new tokens, "
          f"batch {args.batch_size} rows, {args.model}{', adapter ' + args.adapter if args.adapter else ''}; "
          "one process per setting", flush=True)
    only = set(args.only or SETTINGS)
    passed = [a for i, a in enumerate(sys.argv[1:]) if a != "--only" and (i == 0 or sys.argv[i] != "--only")]
    first = None
    for name in [n for n in SETTINGS if n in only]:
        done = subprocess.run([sys.executable, __file__, *passed, "--child", name], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name}: the child failed: {done.stderr.strip().splitlines()[-1]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        first = first or r
        print(f"{name:58s} peak {r['peak_mib']:6.0f} MiB (loaded {r['loaded_mib']:4.0f}), {r['tok_s']:6.1f} tok/s "
              f"({r['tokens']} tokens, {r['rows']} rows); vs the first: memory "
              f"{r['peak_mib'] / first['peak_mib']:.2f}x, speed {r['tok_s'] / first['tok_s']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
