"""The model worker: one thread, one scheduler loop for every mode, fed by a bounded queue.

The engine is synchronous and thread-confined, so every model call (embed, tag,
infill, generate, and loading) runs on one thread, and the event loop only
awaits. Requests wait in a bounded queue; a full queue refuses at once
(OverloadedError -> 429 with Retry-After) instead of letting latency grow.

Each iteration of the loop does, on the model thread:

    queue ──► one-shot batch (embed / tag, equal keys merged)   ──► futures
          └─► decodes that fit (infill / generate): prefill ─┐
                                                              ▼
              running DecodeBatch per model ── step: one token per open span ──► streams, futures
                   ▲   finished and cancelled rows leave at once   │
                   └────────────────────────────────────────────────┘

One-shot jobs carry a `key`: jobs with equal keys are merged into one engine call
by their `run` function, up to `max_batch_tokens`. While nothing decodes, a batch
waits up to `max_wait` for company; while rows decode, nothing waits: an embed runs
between two decode steps instead of behind a whole generation. Decode jobs join
the running batch at the next step (magnet/batch.py) while it has rows
(`max_running_rows`) and KV-cache room (`max_running_tokens`) for them. A batch
runs one model's weights, so with several models served (named adapters) there
is one running batch per model (a decode job's `model`), each stepped once per
iteration; the two limits are totals over all of them. One-shot keys hold the
model id too, so requests for different models never merge into one call. Each job
keeps its own future, so each request gets its own result or its own error: when
a merged call fails on bad input, its jobs are re-run one by one to find whose it was.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from magnet.errors import BackendError, MagnetError, NotReadyError, OverloadedError, PayloadTooLargeError
from magnet.server import metrics

log = logging.getLogger(__name__)

RunGroup = Callable[[list[Any]], list[Any]]  # payloads -> one result per payload, on the worker thread
StartGroup = Callable[[list[Any]], Any]  # payloads -> a DecodeBatch with one decode per payload (prefilled)
_END = object()  # end of a stream


@dataclass(eq=False)
class Job:
    kind: str  # "embed", "tag", "infill", "generate", ... (a metrics label)
    key: tuple | None  # equal keys batch together; None = runs alone
    payload: Any
    run: RunGroup | StartGroup
    tokens: int  # input tokens (decodes: plus what they may generate: their KV-cache share)
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    decode: bool = False  # `run` starts decodes that join the running batch
    model: str = ""  # decodes: the model whose running batch they join (one batch per model)
    rows: int = 1  # decode rows it takes (an infill: one per distinct candidate gap)
    emit: Callable[[Any], None] | None = None  # streaming decodes: partial output, on the worker thread
    cancelled: bool = False  # the caller left after the job left the queue
    started: float = 0.0  # when it left the queue for the model


class ModelWorker:
    def __init__(self, max_queue: int, max_batch_tokens: int, max_wait_s: float, retry_after_s: float = 1.0,
                 max_request_tokens: int | None = None, max_queued_tokens: int | None = None,
                 max_running_rows: int = 64, max_running_tokens: int = 65536):
        self.max_queue = max_queue
        self.max_request_tokens = max_request_tokens  # one request's input tokens (413 above)
        self.max_queued_tokens = max_queued_tokens  # input tokens waiting, all requests (429 above)
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self.max_running_rows = max_running_rows  # decode rows stepping together
        self.max_running_tokens = max_running_tokens  # their context + new tokens: the KV cache's size
        self._queue: collections.deque[Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="magnet-model")
        self._task: asyncio.Task | None = None
        self._closing = False
        self._running: dict = {}  # model -> DecodeBatch of its decodes in flight (worker thread only)
        self._running_jobs: list[Job] = []  # their jobs (read on the loop between iterations)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        return sum(job.tokens for job in self._queue)

    @property
    def running(self) -> int:
        """Decode requests in flight."""
        return len(self._running_jobs)

    # --- submitting --------------------------------------------------------------------

    async def submit(self, kind: str, key: tuple | None, payload: Any, run: RunGroup, tokens: int = 0) -> Any:
        """Queue one job and wait for its own result (or raise its own error)."""
        return await self.enqueue(Job(kind, key, payload, run, tokens, self.new_future()))

    async def submit_decode(self, kind: str, key: tuple, payload: Any, start: StartGroup, tokens: int = 0,
                            rows: int = 1, model: str = "") -> Any:
        """Queue a decode: `start(payloads)` prefills jobs of one key together (the key must name
        the model), their decodes join `model`'s running batch, and each job's result is its
        decode's `result()`."""
        return await self.enqueue(Job(kind, key, payload, start, tokens, self.new_future(), decode=True, rows=rows,
                                      model=model))

    async def stream_decode(self, kind: str, key: tuple, payload: Any, start: StartGroup,
                            tokens: int = 0, model: str = "") -> AsyncIterator[Any]:
        """A decode's `poll()` items as they come, then its `result()`. Closing the iterator early
        (client gone) drops its row at the next step."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        job = Job(kind, key, payload, start, tokens, self.new_future(), decode=True, model=model,
                  emit=lambda item: loop.call_soon_threadsafe(items.put_nowait, item))

        def finished(future: asyncio.Future) -> None:
            if not future.cancelled() and future.exception() is None:
                items.put_nowait(future.result())
            items.put_nowait(_END)

        done = asyncio.ensure_future(self.enqueue(job))
        done.add_done_callback(finished)
        try:
            while (item := await items.get()) is not _END:
                yield item
            await done  # raises the job's error, if any
        finally:
            if not done.done():
                done.cancel()  # still queued: never runs; running: its row leaves at the next step

    async def call(self, kind: str, fn: Callable[..., Any], *args: Any, tokens: int = 0) -> Any:
        """Run `fn(*args)` alone on the worker thread, through the queue."""
        return await self.submit(kind, None, None, lambda _payloads: [fn(*args)], tokens)

    def new_future(self) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    async def enqueue(self, job: Job) -> Any:
        if self._closing:
            raise NotReadyError("the server is shutting down: retry on another replica")
        self.admit(job.kind, job.tokens)
        self._queue.append(job)
        metrics.QUEUE_DEPTH.set(len(self._queue))
        self._arrived.set()
        try:
            return await job.future
        except asyncio.CancelledError:  # the caller left: a queued job gives its slot back at once
            if job in self._queue:
                self._pop(self._queue.index(job))
            job.cancelled = True  # a running decode leaves the batch at the next step
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

    # --- the loop ----------------------------------------------------------------------

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()  # the loop that owns the queue (for other threads)
        self._task = asyncio.create_task(self._loop(), name="magnet-model-worker")

    async def close(self) -> None:
        """Refuse new work, finish everything queued and decoding, then stop the thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while (work := await self._next_work()) is not None:
            oneshot, joining = work
            started = time.perf_counter()
            for job in oneshot + joining:
                job.started = started
                metrics.STAGE_LATENCY.labels("queue", job.kind).observe(started - job.enqueued)
            self._settle(await loop.run_in_executor(self._executor, self._iterate, oneshot, joining))
            metrics.RUNNING.set(len(self._running_jobs))

    def _settle(self, outcomes: list[tuple[Job, bool, Any]]) -> None:
        """Complete the jobs that ended (on the event loop)."""
        ended = time.perf_counter()
        for job, ok, value in outcomes:
            if job.decode:  # prefill to last token (a one-shot job's model time is its batch's)
                metrics.STAGE_LATENCY.labels("model", job.kind).observe(ended - job.started)
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    async def _next_work(self) -> tuple[list[Job], list[Job]] | None:
        """(one-shot batch, decodes joining) for the next iteration; None once closed and idle."""
        while not self._queue:
            if self._running_jobs:
                return [], []  # keep stepping
            if self._closing:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        joining = self._take_joining()
        oneshot = await self._next_batch(wait=not (joining or self._running_jobs))
        return oneshot, joining

    def _take_joining(self) -> list[Job]:
        """Queued decodes, oldest first, while the running batches (all models together) have rows
        and KV room for them (an idle worker always takes the first, however big)."""
        rows = sum(job.rows for job in self._running_jobs)
        tokens = sum(job.tokens for job in self._running_jobs)
        joining = []
        for job in list(self._queue):
            if not job.decode:
                continue
            fits = rows + job.rows <= self.max_running_rows and tokens + job.tokens <= self.max_running_tokens
            if not fits and (rows or joining):
                break  # first come, first served: a later small job does not overtake
            self._pop(self._queue.index(job))
            if not job.cancelled:
                joining.append(job)
            rows, tokens = rows + job.rows, tokens + job.tokens
        self._running_jobs.extend(joining)
        return joining

    async def _next_batch(self, wait: bool) -> list[Job]:
        """The oldest one-shot job plus queued jobs of its key that fit the token budget; waits up
        to max_wait for company only when `wait` (nothing else to do)."""
        index = next((i for i, job in enumerate(self._queue) if not job.decode), None)
        if index is None:
            return []
        first = self._pop(index)
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
            if not wait or remaining <= 0 or self._closing:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return [job for job in batch if not job.future.done()]  # drop requests already gone

    def _find_fitting(self, budget: int) -> int | None:
        for index, job in enumerate(self._queue):
            if not job.decode and job.key is not None and job.tokens <= budget:
                return index
        return None

    def _pop(self, index: int) -> Job:
        job = self._queue[index]
        del self._queue[index]
        metrics.QUEUE_DEPTH.set(len(self._queue))
        return job

    # --- one iteration, on the worker thread -------------------------------------------

    def _iterate(self, oneshot: list[Job], joining: list[Job]) -> list[tuple[Job, bool, Any]]:
        """Run the one-shot batch, prefill the joining decodes into their model's running batch,
        then step every running batch once. Returns (job, ok, result-or-error) for every job that ended."""
        ended = []
        if oneshot:  # answered now, not after the decode step: an embed waits for at most one step
            done = [(job, ok, value) for job, (ok, value) in zip(oneshot, run_batch(oneshot))]
            if self._running or joining:
                self.loop.call_soon_threadsafe(self._settle, done)
            else:
                ended = done
        for group in group_by_key(joining):
            ended += self._join(group)
        for model, running in list(self._running.items()):
            ended += self._step(running)
            if not running:  # empty: the model's next decode starts a batch of its own
                del self._running[model]
        gone = {id(job) for job, _, _ in ended}
        self._running_jobs = [job for job in self._running_jobs if id(job) not in gone and not job.cancelled]
        return ended

    def _join(self, group: list[Job]) -> list[tuple[Job, bool, Any]]:
        """Prefill a group of one key together; on bad input retry alone to find whose it was."""
        started = time.perf_counter()
        try:
            batch = group[0].run([job.payload for job in group])
        except MagnetError as exc:
            if len(group) == 1:
                return [(group[0], False, exc)]
            return [outcome for job in group for outcome in self._join([job])]
        except Exception as exc:  # a bug or a backend failure: a 500 for these requests only
            log.exception("model worker failed to prefill a %s batch of %d", group[0].kind, len(group))
            return [(job, False, BackendError(f"{job.kind} failed: {type(exc).__name__}: {exc}")) for job in group]
        for job, decode in zip(group, batch.decodes):
            decode.owner = job
        metrics.STAGE_LATENCY.labels("prefill", group[0].kind).observe(time.perf_counter() - started)
        model = group[0].model  # one key, one model
        if model in self._running:
            self._running[model].merge(batch)
        elif batch:
            self._running[model] = batch
        return []

    def _step(self, running) -> list[tuple[Job, bool, Any]]:
        """One step of one model's running batch; a failed step fails that batch's rows only."""
        running.drop([d for d in running.decodes if d.owner.cancelled])
        if not running:
            return []
        metrics.BATCH_SIZE.labels("decode").observe(running.rows)
        try:
            finished = running.step()
        except Exception as exc:  # a failed forward leaves the cache unusable: fail every row in it
            log.exception("model worker failed on a decode step of %d rows", running.rows)
            error = BackendError(f"decoding failed: {type(exc).__name__}: {exc}")
            ended = [(d.owner, False, error) for d in running.decodes]
            running.drop(list(running.decodes))
            return ended
        for decode in running.decodes:
            if decode.owner.emit is not None:
                for item in decode.poll():
                    decode.owner.emit(item)
        ended = []
        for decode in finished:
            try:
                ended.append((decode.owner, True, decode.result()))
            except Exception as exc:
                log.exception("model worker failed to finish a %s", decode.owner.kind)
                ended.append((decode.owner, False, BackendError(f"{decode.owner.kind} failed: {exc}")))
        return ended


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
