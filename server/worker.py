"""The model worker: one thread, fed by a bounded queue with a dynamic batcher.

The engine is synchronous and thread-confined, so every model call (embed,
tag, infill, generate, and loading) runs on one thread, and the event loop
only awaits. Requests wait in a bounded queue; a full queue refuses at once
(OverloadedError -> 429 with Retry-After) instead of letting latency grow.

Batchable jobs (embed, tag, infill) carry a `key`: jobs with equal keys are merged
into one engine call by their `run` function. A batch opens with the oldest
job and takes queued jobs that fit the token budget until the budget is spent
or the oldest job has waited `max_wait` seconds. Each job keeps its own
future, so each request gets its own result or its own error: when a merged
call fails on bad input, its jobs are re-run one by one to find whose it was.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from magnet.errors import BackendError, MagnetError, NotReadyError, OverloadedError, PayloadTooLargeError
from magnet.server import metrics

log = logging.getLogger(__name__)

RunGroup = Callable[[list[Any]], list[Any]]  # payloads -> one result per payload, on the worker thread
_END = object()  # end of a stream


@dataclass(eq=False)
class Job:
    kind: str  # "embed", "tag", "infill", "generate", ... (a metrics label)
    key: tuple | None  # equal keys batch together; None = runs alone
    payload: Any
    run: RunGroup
    tokens: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class ModelWorker:
    def __init__(self, max_queue: int, max_batch_tokens: int, max_wait_s: float, retry_after_s: float = 1.0,
                 max_request_tokens: int | None = None, max_queued_tokens: int | None = None):
        self.max_queue = max_queue
        self.max_request_tokens = max_request_tokens  # one request's input tokens (413 above)
        self.max_queued_tokens = max_queued_tokens  # input tokens waiting, all requests (429 above)
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self._queue: collections.deque[Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="magnet-model")
        self._task: asyncio.Task | None = None
        self._closing = False
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        return sum(job.tokens for job in self._queue)

    # --- submitting --------------------------------------------------------------------

    async def submit(self, kind: str, key: tuple | None, payload: Any, run: RunGroup, tokens: int = 0) -> Any:
        """Queue one job and wait for its own result (or raise its own error)."""
        if self._closing:
            raise NotReadyError("the server is shutting down: retry on another replica")
        self.admit(kind, tokens)
        job = Job(kind, key, payload, run, tokens, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        metrics.QUEUE_DEPTH.set(len(self._queue))
        self._arrived.set()
        try:
            return await job.future
        except asyncio.CancelledError:  # the caller left: a queued job gives its slot back at once
            if job in self._queue:
                self._pop(self._queue.index(job))
            raise

    def admit(self, kind: str, tokens: int) -> None:
        """Bound the work, not only the number of requests: 413 for a request no batch could
        take, 429 (with Retry-After) while the queue is full of requests or of tokens."""
        if self.max_request_tokens is not None and tokens > self.max_request_tokens:
            metrics.REJECTED.labels(kind).inc()
            raise PayloadTooLargeError(
                f"this request brings {tokens} input tokens, over the limit of {self.max_request_tokens} per "
                "request: split it into smaller requests (or raise MAGNET_MAX_REQUEST_TOKENS)")
        full = len(self._queue) >= self.max_queue
        if not full and self.max_queued_tokens is not None and self._queue:
            full = self.queued_tokens + tokens > self.max_queued_tokens
        if full:
            metrics.REJECTED.labels(kind).inc()
            raise OverloadedError(
                f"the model queue is full ({len(self._queue)} requests, {self.queued_tokens} tokens waiting): "
                f"retry after {self.retry_after_s:g} s", retry_after=self.retry_after_s,
            )

    async def call(self, kind: str, fn: Callable[..., Any], *args: Any, tokens: int = 0) -> Any:
        """Run `fn(*args)` alone on the worker thread, through the queue."""
        return await self.submit(kind, None, None, lambda _payloads: [fn(*args)], tokens)

    async def stream(self, kind: str, make_iter: Callable[[], Iterator[Any]], tokens: int = 0) -> AsyncIterator[Any]:
        """Iterate `make_iter()` on the worker thread, yielding items here.

        Closing the returned iterator early (client gone) stops the thread's
        iteration after the current item and frees the worker.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def pump(_payloads: list[Any]) -> list[None]:
            if cancel.is_set():  # the client left while the job was queued
                return [None]
            iterator = make_iter()
            try:
                for item in iterator:
                    loop.call_soon_threadsafe(items.put_nowait, item)
                    if cancel.is_set():
                        break
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
            return [None]

        def finished(future: asyncio.Future) -> None:
            items.put_nowait(_END)
            if not future.cancelled():
                future.exception()  # retrieved here too, in case the client has left

        done = asyncio.ensure_future(self.submit(kind, None, None, pump, tokens))
        done.add_done_callback(finished)
        try:
            while (item := await items.get()) is not _END:
                yield item
            await done  # raises the job's error, if any
        finally:
            cancel.set()
            if not done.done():
                done.cancel()  # still queued: never runs; running: stops at the next item

    # --- the loop ----------------------------------------------------------------------

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()  # the loop that owns the queue (for other threads)
        self._task = asyncio.create_task(self._loop(), name="magnet-model-worker")

    async def close(self) -> None:
        """Refuse new work, finish everything queued, then stop the thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while (batch := await self._next_batch()) is not None:
            batch = [job for job in batch if not job.future.done()]  # drop requests already gone
            if not batch:
                continue
            started = time.perf_counter()
            for job in batch:
                metrics.STAGE_LATENCY.labels("queue", job.kind).observe(started - job.enqueued)
            outcomes = await loop.run_in_executor(self._executor, run_batch, batch)
            for job, (ok, value) in zip(batch, outcomes):
                if job.future.done():
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)

    async def _next_batch(self) -> list[Job] | None:
        """The next batch: the oldest job plus queued jobs of any batchable key that fit."""
        while not self._queue:
            if self._closing:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        first = self._pop(0)
        batch, tokens = [first], first.tokens
        if first.key is None:
            return batch
        deadline = first.enqueued + self.max_wait_s
        while tokens < self.max_batch_tokens:
            index = self._find_fitting(self.max_batch_tokens - tokens)
            if index is not None:
                job = self._pop(index)
                batch.append(job)
                tokens += job.tokens
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._closing:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    def _find_fitting(self, budget: int) -> int | None:
        for index, job in enumerate(self._queue):
            if job.key is not None and job.tokens <= budget:
                return index
        return None

    def _pop(self, index: int) -> Job:
        job = self._queue[index]
        del self._queue[index]
        metrics.QUEUE_DEPTH.set(len(self._queue))
        return job


# --- on the worker thread -------------------------------------------------------------


def run_batch(batch: list[Job]) -> list[tuple[bool, Any]]:
    """Run a batch group by group; one (ok, result-or-error) per job, in order."""
    outcomes: dict[int, tuple[bool, Any]] = {}
    for group in group_by_key(batch):
        started = time.perf_counter()
        for job, outcome in zip(group, run_group(group)):
            outcomes[id(job)] = outcome
        elapsed = time.perf_counter() - started
        kind = group[0].kind
        metrics.BATCH_SIZE.labels(kind).observe(len(group))
        metrics.BATCH_TOKENS.labels(kind).observe(sum(job.tokens for job in group))
        for job in group:
            metrics.STAGE_LATENCY.labels("model", job.kind).observe(elapsed)
    return [outcomes[id(job)] for job in batch]


def group_by_key(batch: list[Job]) -> list[list[Job]]:
    groups: dict[Any, list[Job]] = {}
    for job in batch:
        groups.setdefault(job.key if job.key is not None else id(job), []).append(job)
    return list(groups.values())


def run_group(group: list[Job]) -> list[tuple[bool, Any]]:
    try:
        results = group[0].run([job.payload for job in group])
        return [(True, result) for result in results]
    except MagnetError as exc:
        if len(group) == 1:
            return [(False, exc)]
        # One request's bad input must not fail its neighbours: retry them alone.
        return [outcome for job in group for outcome in run_group([job])]
    except Exception as exc:  # a bug or a backend failure: a 500 for these requests only
        log.exception("model worker failed on a %s batch of %d", group[0].kind, len(group))
        return [(False, BackendError(f"{group[0].kind} failed: {type(exc).__name__}: {exc}"))] * len(group)
