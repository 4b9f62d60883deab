"""Run the app without a deployment: in-process (httpx ASGI) or on a loopback port.

    async with running_app(app) as client:        # httpx.AsyncClient, lifespan run, model ready
        r = await client.post("/v1/embed", json={"input": "hi"})

    with serve_on_loopback(app) as base_url:      # real uvicorn in a thread, for sync clients
        OpenAI(base_url=base_url + "/v1", api_key="x")

    release, held = await occupy_worker(app.state.service.worker)   # requests now queue up
    await submit(worker, "embed", ("k",), ["a", "b"], run, sizes=[3, 4])   # a work item of any function
    app = app_with(engine, max_queue=1)           # an app around an engine already loaded

Used by the project's tests and usable by anyone testing code against Magnet.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI


def app_with(engine, **settings) -> FastAPI:
    """The app around an engine already loaded: torch generation, no tagging heads (unless the
    settings say otherwise)."""
    from magnet.server.app import create_app
    from magnet.server.settings import Settings

    return create_app(Settings(**{"generate_backend": "torch", "heads": "none", **settings}), engine=engine)


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> str:
    """The response is the error body `{"error": {"code", "message"}}` with this status and
    code, its message naming every word; returns the message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"], error["message"]
    return error["message"]


@contextlib.asynccontextmanager
async def running_app(app: FastAPI, ready_timeout: float = 60.0, base_url: str = "http://magnet",
                      **client_kwargs) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan around an in-process client; waits for /ready first."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, **client_kwargs) as client:
            await wait_ready(app, ready_timeout)
            yield client


async def wait_ready(app: FastAPI, timeout: float) -> None:
    service = app.state.service
    deadline = time.monotonic() + timeout
    while not service.ready:
        if service.load_error:
            raise RuntimeError(f"the app failed to start: {service.load_error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the app was not ready after {timeout:g} s")
        await asyncio.sleep(0.01)


async def occupy_worker(worker) -> tuple[threading.Event, asyncio.Future]:
    """Hold the model worker's thread until the returned event is set (to test queueing).

    Returns once the worker is busy, so whatever is submitted next waits in the queue.
    """
    started, release = threading.Event(), threading.Event()

    def wait_for_release() -> None:
        started.set()
        release.wait(60)

    task = asyncio.ensure_future(worker.call("hold", wait_for_release))
    if not await asyncio.to_thread(started.wait, 60):
        raise TimeoutError("the model worker did not pick up the hold job")
    return release, task


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_on_loopback(app: FastAPI, ready_timeout: float = 60.0) -> Iterator[str]:
    """uvicorn on 127.0.0.1:<free port> in a thread; yields the base URL once /ready is 200."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="magnet-uvicorn", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        poll_ready(base_url, ready_timeout)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def poll_ready(base_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/ready", timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url} was not ready after {timeout:g} s")
        time.sleep(0.05)


@dataclass(eq=False)
class RawWork:
    """A work item around any function, with the fields the queue reads given directly: for
    testing the worker without an engine. `run(payloads)` returns one result per payload (a
    one-shot item) or a DecodeBatch with one decode per payload (`decode` True)."""

    kind: str
    key: tuple | None
    payload: Any
    run: Callable[[list], Any]
    tokens: int = 0
    sizes: list[int] | None = None  # input tokens per item of a list payload: runs in slices
    decode: bool = False
    model: str = ""
    rows: int = 1
    new_tokens: int = 0

    def __post_init__(self) -> None:
        if self.sizes is not None:
            self.tokens = sum(self.sizes)


def submit(worker, kind: str, key: tuple | None, payload: Any, run: Callable, tokens: int = 0,
           sizes: list[int] | None = None):
    """Queue a one-shot RawWork and await its own result."""
    return worker.submit_work(RawWork(kind, key, payload, run, tokens, sizes))


def submit_decode(worker, kind: str, key: tuple, payload: Any, start: Callable, tokens: int = 0, rows: int = 1,
                  model: str = "", new_tokens: int = 0):
    """Queue a decode RawWork (`start(payloads)` prefills; the key must name the model) and await its result."""
    return worker.submit_work(RawWork(kind, key, payload, start, tokens, None, True, model, rows, new_tokens))


def stream_decode(worker, kind: str, key: tuple, payload: Any, start: Callable, tokens: int = 0, model: str = "",
                  new_tokens: int = 0) -> AsyncIterator[Any]:
    """A decode RawWork's `poll()` items as they come, then its `result()`."""
    return worker.stream_work(RawWork(kind, key, payload, start, tokens, None, True, model, 1, new_tokens))
