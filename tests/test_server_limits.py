"""Auth on and off, the body-size limit (413) and a full queue (429), through HTTP in-process."""
from __future__ import annotations

import asyncio

import pytest

from magnet.server.settings import Settings
from magnet.server.testing import app_with, occupy_worker, running_app



async def test_with_an_api_key_v1_needs_the_bearer_token(tiny_engine):
    async with running_app(app_with(tiny_engine, api_key="s3cret")) as http:
        body = {"input": "a fox"}
        missing = await http.post("/v1/embed", json=body)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await http.post("/v1/embed", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "wrong" in wrong.json()["error"]["message"]
        assert (await http.get("/v1/models")).status_code == 401
        right = await http.post("/v1/embed", json=body, headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
        for open_path in ("/health", "/ready", "/metrics"):
            assert (await http.get(open_path)).status_code == 200


async def test_without_an_api_key_v1_is_open(tiny_engine):
    async with running_app(app_with(tiny_engine)) as http:
        assert (await http.post("/v1/embed", json={"input": "a fox"})).status_code == 200
        assert (await http.get("/v1/models")).status_code == 200


async def test_bodies_over_the_limit_are_413(tiny_engine):
    async with running_app(app_with(tiny_engine, max_body_bytes=1024)) as http:
        big = {"input": ["word " * 100] * 3}  # ~1.5 kB of JSON
        declared = await http.post("/v1/embed", json=big)
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"
        assert "1024" in declared.json()["error"]["message"]

        async def chunked():  # no Content-Length: counted while read
            yield b'{"input": ["' + b"a" * 800
            yield b"b" * 800 + b'"]}'

        streamed = await http.post("/v1/embed", content=chunked(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "payload_too_large"
        assert (await http.post("/v1/embed", json={"input": "small"})).status_code == 200


async def test_a_full_queue_answers_429_with_retry_after_at_once(tiny_engine):
    app = app_with(tiny_engine, max_queue=1, retry_after_s=2)
    worker = app.state.service.worker
    async with running_app(app) as http:
        release, held = await occupy_worker(worker)
        queued = asyncio.ensure_future(http.post("/v1/infill", json={"prefix": "a ", "suffix": " b", "max_tokens": 2}))
        while worker.depth < 1:
            await asyncio.sleep(0.001)
        refused = await http.post("/v1/embed", json={"input": "one more"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["code"] == "overloaded"
        release.set()
        assert (await queued).status_code == 200
        await held
        assert (await http.post("/v1/embed", json={"input": "one more"})).status_code == 200


@pytest.mark.parametrize("env, field, value", [
    ("MAGNET_MAX_QUEUE", "max_queue", 7),
    ("MAGNET_API_KEY", "api_key", "k"),
    ("MAGNET_GENERATE_BACKEND", "generate_backend", "torch"),
])
def test_settings_come_from_magnet_environment_variables(monkeypatch, env, field, value):
    monkeypatch.setenv(env, str(value))
    assert getattr(Settings(), field) == value
