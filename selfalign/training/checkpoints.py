"""A training checkpoint: the adapter, the optimizer's state, the step and both RNGs, written to a
temporary folder and renamed into place, so a killed round resumes from a whole checkpoint or none."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch


def save(model, optimizer, step: int, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "adapter")
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate()}, tmp / "state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def restore(model, optimizer, folder: Path) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = torch.load(folder / "state.pt", weights_only=False)
    set_peft_model_state_dict(model, load_file(str(folder / "adapter" / "adapter_model.safetensors")))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return state["step"]
