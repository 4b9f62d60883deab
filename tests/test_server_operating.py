"""What an operator relies on: auth before parsing, request ids, limits on work, body timeouts,
and work cancelled when its client leaves. In-process or on loopback, on the tiny Llama."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from magnet.server.testing import app_with, occupy_worker, running_app, serve_on_loopback



def counter(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def test_the_key_is_checked_before_the_body_is_parsed_and_no_redirect_skips_it(tiny_engine):
    async with running_app(app_with(tiny_engine, api_key="k")) as http:
        garbage = await http.post("/v1/embed", content=b"{not json", headers={"content-type": "application/json"})
        assert garbage.status_code == 401
        assert (await http.post("/v1/embed/", json={"input": "a"})).status_code == 401
        slash = await http.post("/v1/embed/", json={"input": "a"}, headers={"Authorization": "Bearer k"})
        assert slash.status_code == 404 and "location" not in slash.headers


async def test_the_key_can_come_from_a_file(tiny_engine, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    async with running_app(app_with(tiny_engine, api_key="ignored", api_key_file=str(key_file))) as http:
        ok = await http.post("/v1/embed", json={"input": "a"}, headers={"Authorization": "Bearer from-file"})
        assert ok.status_code == 200
        assert (await http.post("/v1/embed", json={"input": "a"},
                                headers={"Authorization": "Bearer ignored"})).status_code == 401
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="empty"):
        app_with(tiny_engine, api_key_file=str(tmp_path / "empty"))


async def test_request_ids_are_echoed_or_made(tiny_engine):
    async with running_app(app_with(tiny_engine)) as http:
        given = await http.post("/v1/embed", json={"input": "a"}, headers={"X-Request-Id": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        made = await http.post("/v1/embed", json={"input": "a"}, headers={"X-Request-Id": "bad\tid"})
        assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"] != "bad\tid"
        assert (await http.get("/nowhere")).headers["x-request-id"]


async def test_every_answer_carries_its_request_id(tiny_engine):
    calls = {  # route -> (body, the id the answer must carry)
        "/v1/embed": ({"input": "a"}, "rid-1"),
        "/v1/infill": ({"prefix": "a ", "suffix": " b", "max_tokens": 2}, "rid-1"),
        "/v1/generate": ({"prompt": "a", "max_tokens": 2}, "rid-1"),
        "/v1/completions": ({"prompt": "a", "max_tokens": 2}, "cmpl-rid-1"),
    }
    async with running_app(app_with(tiny_engine)) as http:
        for route, (body, want) in calls.items():
            answer = await http.post(route, json=body, headers={"X-Request-Id": "rid-1"})
            assert answer.status_code == 200 and answer.json()["id"] == want, route
        made = await http.post("/v1/embed", json={"input": "a"})
        assert made.json()["id"] == made.headers["x-request-id"]
        stream = await http.post("/v1/generate", json={"prompt": "a", "max_tokens": 2, "stream": True},
                                 headers={"X-Request-Id": "rid-2"})
        events = [json.loads(line[6:]) for line in stream.text.splitlines()
                  if line.startswith("data: {")]
        assert events and all(event["id"] == "rid-2" for event in events)


async def test_a_413_is_counted_under_its_route(tiny_engine):
    async with running_app(app_with(tiny_engine, max_body_bytes=1024)) as http:
        before = counter("magnet_requests_total", route="/v1/embed", status="413")
        assert (await http.post("/v1/embed", json={"input": ["x" * 2000]})).status_code == 413
        assert counter("magnet_requests_total", route="/v1/embed", status="413") == before + 1


async def test_one_request_may_not_bring_more_tokens_than_the_limit(tiny_engine):
    async with running_app(app_with(tiny_engine, max_request_tokens=50)) as http:
        big = await http.post("/v1/embed", json={"input": ["word " * 20] * 4})
        assert big.status_code == 413 and "50" in big.json()["error"]["message"]
        assert "MAGNET_MAX_REQUEST_TOKENS" in big.json()["error"]["message"]
        infill = await http.post("/v1/infill", json={"prefix": "a", "suffix": "b", "max_tokens": 60})
        assert infill.status_code == 413  # the fills' tokens are work too
        assert (await http.post("/v1/embed", json={"input": "small"})).status_code == 200


async def test_queued_tokens_are_bounded_too(tiny_engine):
    app = app_with(tiny_engine, max_queued_tokens=40)
    worker = app.state.service.worker
    async with running_app(app) as http:
        release, held = await occupy_worker(worker)
        first = asyncio.ensure_future(http.post("/v1/embed", json={"input": ["word " * 10] * 2}))
        while worker.depth < 1:
            await asyncio.sleep(0.001)
        refused = await http.post("/v1/embed", json={"input": ["word " * 10] * 2})
        assert refused.status_code == 429 and "tokens waiting" in refused.json()["error"]["message"]
        release.set()
        assert (await first).status_code == 200
        await held


def test_a_body_that_stalls_gets_408_and_frees_the_connection(tiny_engine):
    with serve_on_loopback(app_with(tiny_engine, body_timeout_s=0.5)) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"input\": ")
            started = time.monotonic()
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5


def test_a_client_that_leaves_has_its_queued_work_cancelled(tiny_engine):
    app = app_with(tiny_engine)
    worker = app.state.service.worker
    with serve_on_loopback(app) as base_url:
        loop = worker.loop
        release, held = asyncio.run_coroutine_threadsafe(occupy_worker(worker), loop).result(30)
        before = counter("magnet_cancelled_total", kind="infill")
        generated = counter("magnet_generated_tokens_total", kind="infill")
        with pytest.raises(httpx.ReadTimeout):  # the client gives up while its infill waits
            httpx.post(f"{base_url}/v1/infill", json={"prefix": "a ", "suffix": " b", "max_tokens": 50},
                       timeout=0.5)
        deadline = time.monotonic() + 10
        while counter("magnet_cancelled_total", kind="infill") == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert counter("magnet_cancelled_total", kind="infill") == before + 1
        assert worker.depth == 0  # the job left the queue without running
        release.set()
        asyncio.run_coroutine_threadsafe(asyncio.wait_for(held, 30), loop).result(30)
        assert httpx.post(f"{base_url}/v1/embed", json={"input": "next"}, timeout=30).status_code == 200
        assert counter("magnet_generated_tokens_total", kind="infill") == generated


class FlakyBackend:
    """A generate backend whose engine can be 'killed'; restarts fail `failures` times first."""

    name = "flaky"
    max_model_len = 2048

    def __init__(self, failures: int = 1):
        self.dead, self.failures, self.restarts = False, failures, 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def problem(self) -> str | None:
        return "the engine process died" if self.dead else None

    async def restart(self) -> None:
        self.restarts += 1
        if self.restarts <= self.failures:
            raise RuntimeError("not yet")
        self.dead = False

    async def generate(self, prompt, params, ids=None):
        from magnet.sampling import Completion

        return Completion("ok", "stop", 1, 1)


async def test_a_dead_generation_engine_turns_ready_503_then_comes_back(tiny_engine, monkeypatch):
    from magnet.server import generation

    backend = FlakyBackend(failures=1)
    monkeypatch.setattr(generation, "select_backend", lambda settings, engine, worker, others=None: backend)
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        service = app.state.service
        service._watchdog.cancel()
        service._watchdog = asyncio.create_task(service.watch_backend(interval_s=0.05))
        assert (await http.get("/ready")).status_code == 200
        backend.dead = True
        deadline = time.monotonic() + 5
        while (await http.get("/ready")).status_code == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        down = await http.get("/ready")
        assert down.status_code == 503 and "died" in down.json()["error"]["message"]
        refused = await http.post("/v1/generate", json={"prompt": "a", "max_tokens": 2})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
        while (await http.get("/ready")).status_code != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (await http.get("/ready")).status_code == 200 and backend.restarts == 2  # one failed try, backoff
        assert (await http.post("/v1/generate", json={"prompt": "a", "max_tokens": 2})).status_code == 200


async def test_the_schema_states_the_servers_limit_on_new_tokens(tiny_engine):
    async with running_app(app_with(tiny_engine, max_length=512)) as http:
        schemas = (await http.get("/openapi.json")).json()["components"]["schemas"]
        bounds = {}
        for name, schema in schemas.items():
            for field in ("max_tokens", "max_completion_tokens"):
                prop = schema.get("properties", {}).get(field)
                if prop:
                    bounds[f"{name}.{field}"] = [v["maximum"] for v in [prop, *prop.get("anyOf", [])] if "maximum" in v]
        assert {"GenerateRequest.max_tokens", "InfillRequest.max_tokens"} <= set(bounds)
        assert all(found == [512] for found in bounds.values()), bounds
        refused = await http.post("/v1/generate", json={"prompt": "Hi", "max_tokens": 600})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "input_too_long"
        assert "max_tokens" in refused.json()["error"]["message"]
