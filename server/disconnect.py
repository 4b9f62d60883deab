"""Work for a client that has gone is cancelled, not finished.

A non-streaming request's work runs as a task beside a watcher of the
connection; if the client disconnects first, the task is cancelled: a queued
job never runs, a running decode stops at its next step (once every caller in its batch has gone;
vLLM's abort), and the route answers 499 (nginx's "client closed request",
seen only by the access log and the metrics).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from magnet.server import metrics

T = TypeVar("T")
CLIENT_CLOSED = 499


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def client_disconnected(request: Request) -> None:
    """Returns once the client has gone (the request body has already been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T], kind: str) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(client_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the request itself is cancelled (the shutdown deadline): so is its work
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    metrics.CANCELLED.labels(kind).inc()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientGone(kind)
