"""`n` choices per prompt on the OpenAI routes: n independent samples, decoded side by side.

    params_of_choices(params, n)      -> n SamplingParams (seed, seed+1, ... when a seed is given)
    gather_all(coros)                 -> their results, side by side; the first error as itself
    started_streams(starts)           -> the streams, once every one has started
    interleaved(streams)              -> (choice index, chunk) as each stream yields them

Every choice is its own request to the backend, so they run as rows of the same running
batch (torch) or the same vLLM step, and n needs nothing from either backend.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TypeVar

from magnet.sampling import SamplingParams

T = TypeVar("T")


def params_of_choices(params: SamplingParams, n: int) -> list[SamplingParams]:
    """One per choice: a given seed makes the n choices reproducible, and different."""
    if params.seed is None:
        return [params] * n
    return [replace(params, seed=params.seed + k) for k in range(n)]


async def gather_all(coros: list) -> list:
    """Await every coroutine side by side; the first failure cancels the rest and is raised
    as itself (a MagnetError stays a 4xx), not as an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in coros]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def started_streams(starts: list) -> list[AsyncIterator[T]]:
    """Await every stream's start (bad input raises there, before any byte is sent); if one
    fails, the others are closed (cancelling their generations) and its error is raised."""
    results = await asyncio.gather(*starts, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for stream in results:
            if not isinstance(stream, BaseException):
                await stream.aclose()
        raise failures[0]
    return results


async def interleaved(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """(index, item) from every stream as soon as it comes. Closing this early (the client
    left) or a failing stream closes all of them, which cancels their generations."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
            await queue.put((index, done))
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put((index, exc))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        open_streams = len(tasks)
        while open_streams:
            index, item = await queue.get()
            if item is done:
                open_streams -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for stream in streams:
            with contextlib.suppress(BaseException):
                await stream.aclose()
