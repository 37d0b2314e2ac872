"""A KV cache that grows in place: room for RESERVE_TOKENS more tokens is reserved at a time, so a decode
step writes one column instead of copying every layer's keys and values (DynamicCache concatenates
the whole cache on every step: at a few hundred tokens and 128 rows, gigabytes of copies per step on
a CPU). Imported only by the transformers engine's decode loop, so transformers loads lazily."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

# Columns reserved at a time, not the whole answer budget: every row of a batch shares the columns, so
# room for max_new_tokens more (320) on 128 rows held ~1.9 GB of float32 keys and values that most rows
# never reach. Growing copies the cache once per RESERVE_TOKENS steps (a few percent of their time).
RESERVE_TOKENS = 64


class GrowingLayer(DynamicLayer):
    """One layer's keys and values, [batch, heads, length, dim] views into buffers of `length + room`."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._keys is None or end > self._keys.shape[-2]:
            self._reserve(key_states, value_states, end + self.room)
        self._keys[:, :, self._length:end] = key_states
        self._values[:, :, self._length:end] = value_states
        self._length = end
        self._expose()
        return self.keys, self.values

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        batch, heads, _, dim = key_states.shape
        keys = key_states.new_empty((batch, heads, capacity, dim))
        values = value_states.new_empty((batch, heads, capacity, value_states.shape[-1]))
        if self._length:
            keys[:, :, :self._length] = self._keys[:, :, :self._length]
            values[:, :, :self._length] = self._values[:, :, :self._length]
        self._keys, self._values = keys, values

    def _expose(self) -> None:
        self.keys = self._keys[:, :, :self._length]
        self.values = self._values[:, :, :self._length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._keys is not None and self._length:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._keys is not None and self._length:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._expose()

    def absorb(self, other: GrowingLayer, start: int, width: int, room: int) -> None:
        """Become this layer's rows (from column `start` on) then `other`'s, both right-aligned in
        `width` columns with room past them; the left padding is zeros (masked, but it must be finite:
        attention multiplies it by a zero weight)."""
        mine = (self._keys[:, :, start:self._length], self._values[:, :, start:self._length])
        theirs = (other._keys[:, :, :other._length], other._values[:, :, :other._length])
        merged = []
        for a, b in zip(mine, theirs, strict=True):
            buffer = a.new_empty((len(a) + len(b), a.shape[1], width + room, a.shape[-1]))
            for rows, part in ((slice(0, len(a)), a), (slice(len(a), None), b)):
                buffer[rows, :, :width - part.shape[-2]] = 0
                buffer[rows, :, width - part.shape[-2]:width] = part
            merged.append(buffer)
        self._keys, self._values = merged
        other.reset()  # the fresh rows live on in the merged buffers only: free theirs layer by layer
        self._length = width
        self.room = max(self.room, room)
        self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a growing KV cache is not cropped (the engine never asks)")

    def reset(self) -> None:
        self._keys = self._values = None
        self._length = 0
        super().reset()


def bytes_per_token(model) -> int:
    """Keys and values one token of one row holds over all layers (46 KB on SmolLM2-135M in float32)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize


def growing_cache(model, room: int) -> DynamicCache | None:
    """A cache whose every layer reserves `room` tokens past the prefill, or None when the model's cache
    is not plain full attention everywhere (sliding windows and the like keep transformers' own)."""
    plain = DynamicCache(config=model.config)
    if not plain.layers or any(type(layer) is not DynamicLayer for layer in plain.layers):
        return None
    plain.layers = [GrowingLayer(room) for _ in plain.layers]
    return plain


def merge(running: DynamicCache, fresh: DynamicCache, start: int, width: int, room: int) -> None:
    """Put fresh's rows after running's, in place in running (see GrowingLayer.absorb)."""
    for mine, theirs in zip(running.layers, fresh.layers, strict=True):
        mine.absorb(theirs, start, width, room)
