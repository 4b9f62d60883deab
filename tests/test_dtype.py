"""Which dtype each path runs: the one rule (magnet.hardware.default_dtype) reaches the torch
engine and vLLM alike, --dtype overrides both, and the API and /metrics say what runs."""
from __future__ import annotations

import pytest
import torch

import magnet.hardware
from magnet.loading import ModelSpec, load_model
from magnet.server.settings import Settings
from magnet.server.testing import app_with, running_app
from magnet.server.vllm_backend import engine_args


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_a_model_loads_in_bf16_only_where_the_cpu_multiplies_it_natively(tiny_model_dir, monkeypatch,
                                                                         native, expected):
    monkeypatch.setattr(magnet.hardware, "cpu_has_native_bf16", lambda: native)
    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu"))
    assert loaded.dtype == expected
    pinned = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float16"))
    assert pinned.dtype == torch.float16


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_vllm_follows_the_same_rule_and_dtype_overrides_it(tmp_path, monkeypatch, native, expected):
    monkeypatch.setattr(magnet.hardware, "cpu_has_native_bf16", lambda: native)
    unset = ModelSpec(device="cpu")
    assert engine_args(tmp_path, "m", Settings(), unset).dtype == expected
    assert engine_args(tmp_path, "m", Settings(dtype="float32"), unset).dtype == "float32"  # --dtype
    assert engine_args(tmp_path, "m", Settings(), ModelSpec(dtype="bfloat16")).dtype == "bfloat16"


async def test_models_and_metrics_say_which_dtype_each_backend_runs(tiny_engine):
    from test_server_metrics import scrape, value

    async with running_app(app_with(tiny_engine)) as http:
        cards = (await http.get("/v1/models")).json()["data"]
        table = await scrape(http)
    assert cards[0]["dtypes"] == {"torch": "float32"}  # the tiny fixture is pinned to float32
    assert value(table, "magnet_model_dtype", model=tiny_engine.name, backend="torch", dtype="float32") == 1
