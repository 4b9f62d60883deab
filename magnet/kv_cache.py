"""The decode batch's KV cache: each layer's keys and values in buffers with spare columns.

transformers' DynamicCache appends a step's columns with torch.cat, which copies the whole
cache of every layer on every step: 16 rows over 300 cached columns, 60 copies of
(16, 3, 300, 64) bf16, ~17 ms a step, about as long as the step's model forward; 1,000 columns,
~53 ms. `GrowingLayer` keeps `keys`/`values` as views of larger buffers and writes a step's
columns in place (~0.8 ms a step at any width); a buffer is reallocated, with
`SPARE_COLUMNS` more, only when it is full or when somebody replaced the views (the decode
batch's merge, row drop and column compaction assign new tensors, as they did with
DynamicCache).

    cache = GrowingCache()     # a DynamicCache whose layers grow in place
    keys, values = cache.update(k, v, layer)    # k, v (B, kv heads, n, D) -> (B, kv heads, K, D)
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

# spare columns a buffer gets when it is (re)allocated: a reallocation copies the cache once
# every SPARE_COLUMNS decode steps instead of on each. The spare of the embedded model is
# 1.5 MB a row (30 layers x keys and values x 3 kv heads x 64 x 64, bf16): a running batch
# holds at most SPARE_COLUMNS tokens a row beyond the KV tokens the server admits
# (--max-running-tokens)
SPARE_COLUMNS = 64


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are the first K columns of buffers (B, kv heads,
    capacity, D)."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        width = self.get_seq_length()
        total = width + key_states.shape[-2]
        if not (self.views_buffers() and total <= self.key_buffer.shape[-2]):
            self.reallocate(total + SPARE_COLUMNS, key_states)
        self.key_buffer[:, :, width:total] = key_states
        self.value_buffer[:, :, width:total] = value_states
        self.keys, self.values = self.key_buffer[:, :, :total], self.value_buffer[:, :, :total]
        return self.keys, self.values

    def views_buffers(self) -> bool:
        """Whether keys and values are still the leading columns of the buffers (nobody assigned
        other tensors to them since the last update)."""
        buffers = ((self.keys, self.key_buffer), (self.values, self.value_buffer))
        return all(buffer is not None and view.data_ptr() == buffer.data_ptr() and view.shape[:2] == buffer.shape[:2]
                   and view.stride() == buffer.stride() for view, buffer in buffers)

    def reallocate(self, capacity: int, like: torch.Tensor) -> None:
        """New buffers of `capacity` columns holding the current keys and values."""
        width = self.get_seq_length()
        shape = (*like.shape[:2], capacity, like.shape[-1])
        self.key_buffer = like.new_empty(shape)
        self.value_buffer = like.new_empty(shape)
        if width:
            self.key_buffer[:, :, :width] = self.keys
            self.value_buffer[:, :, :width] = self.values


class GrowingCache(DynamicCache):
    """A DynamicCache (every method the model and the decode batch use) of GrowingLayers."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)
