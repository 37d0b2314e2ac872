"""What the transformers engine samples with: a copy of the base model's module tree that holds no
second copy of its weights, and the base given back exactly afterwards.

For the base, the copy shares the base's weights; with oneDNN it borrows them, reordered into oneDNN's
layout (onednn_linear.py). An adapter is fastest merged into the weights (no extra products per step),
but a merged copy of the base costs the base's size again (0.5 GB for the embedded model) in every stage
that samples from an adapter, which put a full round's generate stage over 4 GB. So the adapter is
merged into the base's own tensors. The trainer and the base's own sampling read those tensors later,
and W + d - d is not W in float arithmetic, so each weight the adapter changes is first written as it
is to a temporary file beside the adapter, and `Spill.restore` reads it back bit for bit. The file has
no name (O_TMPFILE on Linux), so a killed process leaves nothing on disk.
"""

from __future__ import annotations

import os
import tempfile


class Spill:
    """The base's weights an adapter merge changes, as they were, in a temporary file until restored."""

    def __init__(self, params: list, flags: list, directory: str | None):
        self.params = [(param, param.shape, param.dtype) for param in params]
        self.flags = flags  # requires_grad of every base weight: peft freezes the copy it wraps, which shares them
        try:
            self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (open until restore)
        except OSError:  # the adapter's folder is read-only: the system's temporary folder
            self.file = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            for param in params:
                self.file.write(_as_bytes(param.detach().contiguous()).numpy().data)
            self.file.flush()
        except BaseException:  # a full disk: nothing is merged yet, only peft's freezing to undo
            self.file.close()
            _set_requires_grad(flags)
            raise

    def restore(self) -> None:
        """Every spilled weight as it was before the merge (the copy that sampled with them must go)."""
        import torch

        self.file.seek(0)
        with torch.no_grad():  # not inference_mode: the trainer saves these weights for its backward pass
            for param, shape, dtype in self.params:
                plain = torch.empty(shape, dtype=dtype)
                want = plain.numel() * plain.element_size()
                if self.file.readinto(_as_bytes(plain).numpy()) != want:
                    raise OSError("the temporary copy of the base model's weights came back short")
                param.data = plain
        _set_requires_grad(self.flags)
        self.file.close()
        self.params, self.flags = [], []


def make(base, path: str | None, *, onednn: bool, reorder_base: bool,
         in_place: bool) -> tuple[object, list, Spill | None]:
    """(model, borrowed, spill): the model that samples base + the adapter at `path` (None: the base),
    the base weights it borrowed reordered (onednn_linear.give_back) and the spill of those an adapter
    was merged into (Spill.restore). Without oneDNN's reordered layout or in_place, an adapter is
    merged into a deep copy of the base (one model more in memory)."""
    from selfalign.engines import onednn_linear
    from selfalign.training.sharing import sharing_copy

    if path is None:
        if not onednn:
            return base, [], None
        model = sharing_copy(base)
        return model, onednn_linear.swap_linears(model, reorder=reorder_base, lend=True), None
    if onednn and reorder_base and in_place:
        spill, model = merge(base, path)
        return model, onednn_linear.swap_linears(model, reorder=True, lend=True), spill
    import copy

    from peft import PeftModel

    merged = PeftModel.from_pretrained(copy.deepcopy(base), path).merge_and_unload()
    if onednn:
        onednn_linear.swap_linears(merged, reorder=True)
    return merged.eval(), [], None


def give_back(borrowed: list, spill: Spill | None) -> None:
    """The base's own weights back: plain layout, no adapter merged in."""
    from selfalign.engines import onednn_linear

    onednn_linear.give_back(borrowed)
    if spill is not None:
        spill.restore()


def merge(base, path: str) -> tuple[Spill, object]:
    """(spill, model): `model` samples base + the adapter at `path`. It is a copy of the base's module
    tree whose weights are the base's own tensors, the LoRA-wrapped ones merged in place, so until
    spill.restore() the base itself computes with the merged weights."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    from selfalign.training.sharing import sharing_copy

    flags = [(param, param.requires_grad) for param in base.parameters()]
    wrapped = PeftModel.from_pretrained(sharing_copy(base), path)
    shared = {id(param) for param in base.parameters()}
    changed = {id(p): p for m in wrapped.modules() if isinstance(m, BaseTunerLayer)
               for p in m.get_base_layer().parameters(recurse=False) if id(p) in shared}
    spill = Spill(list(changed.values()), flags, path if os.path.isdir(path) else None)
    try:
        return spill, wrapped.merge_and_unload().eval()
    except BaseException:
        spill.restore()
        raise


def _set_requires_grad(flags: list) -> None:
    """Each base weight's requires_grad as it was before peft froze the copy that shares it."""
    for param, flag in flags:
        param.requires_grad_(flag)


def _as_bytes(tensor):
    """The tensor's memory as a flat uint8 tensor (numpy has no bfloat16; bytes are bytes)."""
    import torch

    return tensor.view(-1).view(torch.uint8)
