"""The growing KV cache (magnet/kv_cache.py): what DynamicCache holds after every operation the
decode batch applies, with a step's columns written in place."""
from __future__ import annotations

import torch
from transformers import DynamicCache

from magnet import kv_cache
from magnet.kv_cache import SPARE_COLUMNS, GrowingCache

LAYERS, KV_HEADS, DIM = 2, 3, 4


def columns(rows: int, n: int) -> torch.Tensor:
    return torch.randn(rows, KV_HEADS, n, DIM)


def apply(cache, operations) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the operations on `cache`; every update's returned (keys, values), copied."""
    returned = []
    for op, *args in operations:
        if op == "update":
            for layer in range(LAYERS):
                keys, values = cache.update(args[0][layer], args[1][layer], layer)
                returned.append((keys.clone(), values.clone()))
        elif op == "select":
            cache.batch_select_indices(args[0])
        elif op == "assign":  # what DecodeBatch.merge and compact do: new tensors in place of the views
            for layer in cache.layers:
                layer.keys, layer.values = args[0](layer.keys), args[0](layer.values)
    return returned


def test_the_growing_cache_holds_what_dynamic_cache_holds_after_every_operation():
    torch.manual_seed(0)

    def update(rows, n):
        return ("update", [columns(rows, n) for _ in range(LAYERS)], [columns(rows, n) for _ in range(LAYERS)])

    def pad_two(t):  # a merge's padding on the right along the columns
        return torch.cat([t, torch.zeros(*t.shape[:2], 2, t.shape[-1])], dim=2)

    operations = ([update(3, 5)] + [update(3, 1) for _ in range(SPARE_COLUMNS + 3)]  # past the first buffer
                  + [update(3, 2), ("select", torch.tensor([0, 2])), update(2, 1), ("assign", pad_two),
                     update(2, 1), ("assign", lambda t: t[:, :, 1:]), update(2, 3)])
    want = apply(DynamicCache(), operations)
    cache = GrowingCache()
    got = apply(cache, operations)
    assert len(got) == len(want) > 0
    for (keys, values), (want_keys, want_values) in zip(got, want):
        assert keys.shape == want_keys.shape
        assert torch.equal(keys, want_keys) and torch.equal(values, want_values)
    assert cache.get_seq_length() == want[-1][0].shape[2] == 5 + SPARE_COLUMNS + 3 + 2 + 1 + 2 + 1 - 1 + 3


def test_a_step_writes_its_columns_into_the_buffer_instead_of_copying_the_cache(monkeypatch):
    reallocations = []
    original = kv_cache.GrowingLayer.reallocate

    def counted(layer, capacity, like):
        reallocations.append(capacity)
        original(layer, capacity, like)

    monkeypatch.setattr(kv_cache.GrowingLayer, "reallocate", counted)
    cache = GrowingCache()
    cache.update(columns(2, 10), columns(2, 10), 0)  # a prefill: one buffer, with spare columns
    buffer = cache.layers[0].key_buffer
    for _ in range(SPARE_COLUMNS):
        keys, _ = cache.update(columns(2, 1), columns(2, 1), 0)
        assert keys.data_ptr() == buffer.data_ptr()  # a view of the same buffer: nothing copied
    assert reallocations == [10 + SPARE_COLUMNS]
    cache.update(columns(2, 1), columns(2, 1), 0)  # the buffer is full: one reallocation
    assert reallocations == [10 + SPARE_COLUMNS, 11 + 2 * SPARE_COLUMNS]
    assert cache.layers[0].key_buffer.data_ptr() != buffer.data_ptr()
