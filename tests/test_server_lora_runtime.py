"""Adapters loaded and unloaded at run time: vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter."""
from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from test_loading import save_random_lora  # a tiny LoRA adapter that changes outputs

from magnet.server.testing import app_with, assert_error, occupy_worker, running_app

NAME = "legal"
KEY = {"Authorization": "Bearer k"}
TEXTS = ["A man is playing a guitar."]


@pytest.fixture(scope="module")
def adapter_dir(tiny_loaded, tmp_path_factory):
    return save_random_lora(tiny_loaded, tmp_path_factory.mktemp("runtime") / NAME, seed=3)


@pytest.fixture(scope="module")
def legal_engine(tiny_model_dir, adapter_dir, tiny_engine):
    from magnet.engine import Engine
    from magnet.loading import ModelSpec

    dtype = str(tiny_engine.loaded.dtype).removeprefix("torch.")  # what a load beside it uses
    return Engine.from_spec(ModelSpec(model=str(tiny_model_dir), adapter=str(adapter_dir), device="cpu", dtype=dtype),
                            tiny_engine.config)


@pytest.fixture
async def http(tiny_engine):
    async with running_app(app_with(tiny_engine, api_key="k", max_runtime_adapters=2), headers=KEY) as client:
        yield client


async def served(http) -> list[str]:
    return [card["id"] for card in (await http.get("/v1/models")).json()["data"]]


async def test_load_serves_the_adapter_at_once_and_unload_stops_it(http, adapter_dir, tiny_engine, legal_engine):
    body = {"lora_name": NAME, "lora_path": str(adapter_dir)}
    assert_error(await http.post("/v1/load_lora_adapter", json=body, headers={"Authorization": ""}), 401,
                 "unauthorized")
    loaded = await http.post("/v1/load_lora_adapter", json=body)
    assert loaded.status_code == 200 and NAME in loaded.text
    assert await served(http) == [tiny_engine.name, NAME]
    embedded = (await http.post("/v1/embeddings", json={"input": TEXTS, "model": NAME})).json()
    want = legal_engine.embed(TEXTS).embeddings[0].tolist()
    assert max(abs(a - b) for a, b in zip(embedded["data"][0]["embedding"], want)) < 1e-5
    default = (await http.post("/v1/embeddings", json={"input": TEXTS})).json()["data"][0]["embedding"]
    assert max(abs(a - b) for a, b in zip(default, want)) > 1e-3  # the adapter, not the default
    assert_error(await http.post("/v1/load_lora_adapter", json=body), 422, "invalid_input", "already served")

    unloaded = await http.post("/v1/unload_lora_adapter", json={"lora_name": NAME})
    assert unloaded.status_code == 200 and NAME in unloaded.text
    assert await served(http) == [tiny_engine.name]
    assert_error(await http.post("/v1/embeddings", json={"input": TEXTS, "model": NAME}), 404, "model_not_found")
    assert_error(await http.post("/v1/unload_lora_adapter", json={"lora_name": NAME}), 404, "model_not_found")
    assert_error(await http.post("/v1/unload_lora_adapter", json={"lora_name": "magnet"}), 422, "invalid_input",
                 "default model")


async def test_a_request_running_on_an_unloaded_adapter_finishes(http, adapter_dir):
    await http.post("/v1/load_lora_adapter", json={"lora_name": NAME, "lora_path": str(adapter_dir)})
    request = {"model": NAME, "prompt": "The quick brown", "max_tokens": 40, "temperature": 0, "stream": True}
    async with http.stream("POST", "/v1/completions", json=request) as response:
        lines = aiter(response.aiter_lines())
        first = await anext(lines)
        assert first.startswith("data: ")
        await http.post("/v1/unload_lora_adapter", json={"lora_name": NAME})
        rest = [line async for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    events = [json.loads(first[6:])] + [json.loads(line[6:]) for line in rest[:-1]]
    assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop") and events[-1]["model"] == NAME
    assert_error(await http.post("/v1/completions", json={**request, "stream": False}), 404, "model_not_found")


async def test_the_manifest_is_checked_before_the_weights(http, adapter_dir, tmp_path):
    other = shutil.copytree(adapter_dir, tmp_path / "other")
    manifest = json.loads((other / "magnet.json").read_text())
    manifest["base"]["name"] = "Llama-2-7b"
    manifest["base"]["hidden_size"] = 4096
    (other / "magnet.json").write_text(json.dumps(manifest))
    for weights in other.glob("adapter_model.*"):
        weights.write_bytes(b"not weights")  # never read: the manifest refuses first
    refused = await http.post("/v1/load_lora_adapter", json={"lora_name": "other", "lora_path": str(other)})
    assert_error(refused, 422, "invalid_input", "lora_path", "Llama-2-7b")
    assert_error(await http.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(tmp_path)}),
                 422, "invalid_input", "adapter_config.json")
    for odd in ('"~nobody-here/adapter"', '"a\\u0000b"', '"\\udcff"'):  # JSON text: a lone surrogate as sent
        body = '{"lora_name": "x", "lora_path": %s}' % odd
        answer = await http.post("/v1/load_lora_adapter", content=body, headers={"content-type": "application/json"})
        assert_error(answer, 422, "invalid_input", "lora_path")
    assert_error(await http.post("/v1/load_lora_adapter", json={"lora_name": "magnet", "lora_path": str(adapter_dir)}),
                 422, "invalid_input", "alias")
    assert await served(http) == [(await http.get("/v1/models")).json()["data"][0]["id"]]


async def test_two_adapters_load_side_by_side(http, adapter_dir, tiny_loaded, tmp_path):
    second = save_random_lora(tiny_loaded, tmp_path / "med", seed=5)
    answers = await asyncio.gather(
        http.post("/v1/load_lora_adapter", json={"lora_name": NAME, "lora_path": str(adapter_dir)}),
        http.post("/v1/load_lora_adapter", json={"lora_name": "med", "lora_path": str(second)}))
    assert [a.status_code for a in answers] == [200, 200]
    assert set((await served(http))[1:]) == {NAME, "med"}


async def test_a_name_is_loaded_again_only_once_its_previous_requests_are_done(tiny_engine, adapter_dir):
    """A queued request keeps the unloaded weights; loading the name again waits for it (422)."""
    app = app_with(tiny_engine, max_runtime_adapters=2)
    body = {"lora_name": NAME, "lora_path": str(adapter_dir)}
    async with running_app(app) as http:
        assert (await http.post("/v1/load_lora_adapter", json=body)).status_code == 200
        worker = app.state.service.worker
        release, held = await occupy_worker(worker)
        queued = asyncio.ensure_future(http.post("/v1/completions", json={"model": NAME, "prompt": "The quick",
                                                                          "max_tokens": 3, "temperature": 0}))
        while not any(job.model == NAME for job in worker._queue):
            await asyncio.sleep(0.01)
        assert (await http.post("/v1/unload_lora_adapter", json={"lora_name": NAME})).status_code == 200
        assert_error(await http.post("/v1/load_lora_adapter", json=body), 422, "invalid_input", "still running")
        release.set()
        await held
        finished = await queued
        assert finished.status_code == 200 and finished.json()["model"] == NAME
        assert (await http.post("/v1/load_lora_adapter", json=body)).status_code == 200


async def test_loading_at_run_time_is_off_unless_allowed_and_capped(tiny_engine, adapter_dir, tmp_path):
    body = {"lora_name": NAME, "lora_path": str(adapter_dir)}
    async with running_app(app_with(tiny_engine)) as http:  # the default: off, whatever the path
        for path in (str(adapter_dir), "/etc"):
            assert_error(await http.post("/v1/load_lora_adapter", json={**body, "lora_path": path}), 403,
                         "forbidden", "--max-runtime-adapters")
    second = tmp_path / "med"
    shutil.copytree(adapter_dir, second)
    async with running_app(app_with(tiny_engine, max_runtime_adapters=1)) as http:
        for name in ("x" * 129, "bad\nname"):
            assert_error(await http.post("/v1/load_lora_adapter", json={**body, "lora_name": name}), 422,
                         "invalid_input", "at most 128 printable characters")
        assert (await http.post("/v1/load_lora_adapter", json=body)).status_code == 200
        assert_error(await http.post("/v1/load_lora_adapter", json={"lora_name": "med", "lora_path": str(second)}),
                     422, "invalid_input", "1 adapters loaded", "unload one first")
        assert (await http.post("/v1/unload_lora_adapter", json={"lora_name": NAME})).status_code == 200
        assert (await http.post("/v1/load_lora_adapter", json={"lora_name": "med", "lora_path": str(second)})
                ).status_code == 200
