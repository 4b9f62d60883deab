"""The model worker: one thread, one scheduler loop for every mode, fed by a bounded queue.

The engine is synchronous and thread-confined, so every model call (embed, tag,
infill, generate, and loading) runs on one thread, and the event loop only
awaits. Requests are priced and admitted (server/admission.py: 413 over the
per-request limits, 429 with Retry-After once the estimated wait is too long),
then wait in the queue.

Each iteration of the loop does, on the model thread:

    queue ──► one-shot slices (embed / tag, equal keys merged)   ──► futures (or back in the queue)
          └─► decodes that join (infill / generate): prefill ─┐
                                                               ▼
              running DecodeBatch per model ── step: one token per open span ──► streams, futures
                   ▲   finished and cancelled rows leave at once   │
                   └────────────────────────────────────────────────┘

What runs is chosen by server/scheduling.py, bounded by one token budget
(`max_batch_tokens`): one-shot jobs with equal keys merge into one engine call up
to the budget, and a job bigger than the budget runs one slice per iteration, going
back to the end of the queue in between, so other requests run between its slices
and a job whose client has gone stops at the next one. While nothing decodes, a
batch waits up to `max_wait` for company; while rows decode, nothing waits: an embed
runs between two decode steps instead of behind a whole generation. Decode jobs join
the running batch at the next step (magnet/batch.py) while it has rows
(`max_running_rows`) and KV-cache room (`max_running_tokens`) for them. A batch runs
one model's weights, so with several models served (named adapters) there is one
running batch per model (a decode job's `model`), each stepped once per iteration;
the two limits are totals over all of them. One-shot keys hold the model id too, so
requests for different models never merge into one call. Each job keeps its own
future, so each request gets its own result or its own error: when a merged call
fails on bad input, its jobs are re-run one by one to find whose it was (one rule,
`own_outcomes`, for one-shot calls and prefills alike).
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
from magnet.server.admission import (
    REQUEST_CHARGE,
    DrainRate,
    estimated_wait_s,
    retry_after_s,
    too_costly,
    too_many_rows,
)
from magnet.server.scheduling import Slice, fitting_slice, plan_joining, plan_oneshot
from magnet.server.work import CallWork, Work

log = logging.getLogger(__name__)

RunGroup = Callable[[list[Any]], list[Any]]  # payloads -> one result per payload, on the worker thread
StartGroup = Callable[[list[Any]], Any]  # payloads -> a DecodeBatch with one decode per payload (prefilled)
_END = object()  # end of a stream


@dataclass(eq=False)
class Job:
    """One typed work item (server/work.py) in the queue, and the queue's bookkeeping around
    it. Admission and the scheduler read the item's own fields through it; nothing about the
    work is copied or written twice."""

    work: Work
    future: asyncio.Future
    emit: Callable[[Any], None] | None = None  # streaming decodes: partial output, on the worker thread
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # the caller left after the job left the queue
    started: float = 0.0  # when it first left the queue for the model
    done: int = 0  # sliced one-shot jobs: items already run
    partial: list = field(default_factory=list)  # their results

    @property
    def kind(self) -> str:  # "embed", "tag", "infill", "generate", "load", ... (a metrics label)
        return self.work.kind

    @property
    def key(self) -> tuple | None:  # equal keys batch together; None = runs alone
        return self.work.key

    @property
    def payload(self) -> Any:  # what the engine call gets; sliceable jobs: a list of items
        return self.work.payload

    @property
    def run(self) -> RunGroup | StartGroup:
        return self.work.run

    @property
    def tokens(self) -> int:  # input tokens (decodes: what their prefill encodes, every row)
        return self.work.tokens

    @property
    def decode(self) -> bool:  # `run` starts decodes that join the running batch
        return self.work.decode

    @property
    def sizes(self) -> list[int] | None:  # one-shot jobs over a list of items: input tokens per item (sliced)
        return None if self.decode else self.work.sizes

    @property
    def model(self) -> str:  # decodes: the model whose running batch they join (one batch per model)
        return self.work.model if self.decode else ""

    @property
    def rows(self) -> int:  # decode rows it takes (an infill: one per distinct candidate gap)
        return self.work.rows if self.decode else 1

    @property
    def new_tokens(self) -> int:  # decodes: what every row may add in all (rows x max_tokens per row)
        return self.work.new_tokens if self.decode else 0

    @property
    def kv_tokens(self) -> int:
        """A decode's share of the KV cache: its context and every token it may add."""
        return self.tokens + self.new_tokens

    @property
    def cost(self) -> int:
        """The model work still to do, in tokens: the price admission uses (an infill's best_of
        candidates read once more at its end included: `after_tokens`)."""
        if self.sizes is not None:
            return sum(self.sizes[self.done:])
        return self.tokens + self.new_tokens + getattr(self.work, "after_tokens", 0)

    def ahead(self, budget: int) -> int:
        """What it delays a job queued behind it: a sliced job, one slice (`budget`: the job
        behind runs before its next one); a decode, its prefill (its new tokens are decoded
        beside the others, in the running batch, and slow the drain rate); else its cost."""
        if self.decode:
            return self.tokens
        return fitting_slice(self, budget, first=True).tokens if self.sizes is not None else self.cost


class ModelWorker:
    def __init__(self, max_queue: int, max_batch_tokens: int, max_wait_s: float, retry_after_s: float = 1.0,
                 max_request_tokens: int | None = None, max_queued_tokens: int | None = None,
                 max_running_rows: int = 64, max_running_tokens: int = 65536,
                 max_queue_wait_s: float | None = None):
        self.max_queue = max_queue
        self.max_request_tokens = max_request_tokens  # one request's price, all its jobs (413 above)
        self.max_queued_tokens = max_queued_tokens  # tokens of work waiting, all requests (429 above)
        self.max_queue_wait_s = max_queue_wait_s  # the estimated wait before a new job runs (429 above)
        self.max_batch_tokens = max_batch_tokens  # one model call's tokens: a slice, a prefill
        self.max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self.max_running_rows = max_running_rows  # decode rows stepping together
        self.max_running_tokens = max_running_tokens  # their context + new tokens: the KV cache's size
        self.drain = DrainRate()  # tokens of model work per second, measured
        self._queue: collections.deque[Job] = collections.deque()
        self._slicing: list[Job] = []  # one-shot jobs whose slice is running (out of the queue meanwhile)
        self._in_flight = 0  # tokens of the iteration running now (slices and prefills)
        self._in_flight_since = 0.0  # when it started
        self._arrived = asyncio.Event()
        self._preparing = 0  # requests being tokenized: work about to be queued (`_await_preparing`)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="magnet-model")
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="magnet-tokenize")
        self._task: asyncio.Task | None = None
        self._closing = False
        self.stopped: str | None = None  # why the loop ended on an error, if it did (`_on_loop_end`)
        self._running: dict = {}  # model -> DecodeBatch of its decodes in flight (worker thread only)
        self._running_jobs: list[Job] = []  # their jobs (read on the loop between iterations)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        """The work ahead of a new job, in tokens: the queue and the rest of the jobs being sliced."""
        return sum(job.cost for job in self._queue) + sum(job.cost for job in self._slicing)

    @property
    def running(self) -> int:
        """Decode requests in flight."""
        return len(self._running_jobs)

    @property
    def work_ahead(self) -> int:
        """Tokens of work a new job waits behind: `Job.ahead` of each queued job (a job being
        sliced goes back behind it after its current slice), and the model call running now."""
        return self._in_flight + sum(job.ahead(self.max_batch_tokens) for job in self._queue)

    def estimated_wait_s(self, own: int = 0) -> float:
        """Seconds until a job queued now starts: the work ahead at the measured rate (less `own`,
        its request's own jobs, which run beside it), less what the running call has done."""
        rate = self.drain.per_second
        running_for = time.perf_counter() - self._in_flight_since if self._in_flight else 0.0
        done = min(running_for, estimated_wait_s(self._in_flight, rate))
        return max(0.0, estimated_wait_s(max(0, self.work_ahead - own), rate) - done)

    # --- preparing and submitting -------------------------------------------------------

    async def tokenize(self, kind: str, prepare: Callable[[], Any]) -> Any:
        """Run `prepare()` (tokenizing: the token ids a job carries, and prices) on the tokenizer
        thread, off the event loop and off the model thread; timed as the "tokenize" stage."""
        started = time.perf_counter()
        if len(self._queue) + self._preparing >= self.max_queue:  # it would find the queue full: say so now,
            self.refuse(kind, self.queue_full(f"{len(self._queue)} requests waiting, "  # not after the tokenizer
                                              f"{self._preparing} being tokenized"))
        self._preparing += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._tokenizer, prepare)
        finally:
            self._preparing -= 1  # its job is queued next, in the same turn of the loop
            metrics.STAGE_LATENCY.labels("tokenize", kind).observe(time.perf_counter() - started)

    async def submit_work(self, work: Work) -> Any:
        """Queue a typed work item (server/work.py: embed, tag, infill, generate) and wait for its
        own result: a one-shot item's result list (run in slices when big), a decode's `result()`."""
        return await self.enqueue(Job(work, self.new_future()))

    def stream_work(self, work: Work) -> AsyncIterator[Any]:
        """A decode work item's `poll()` items as they come, then its `result()`. Closing the
        iterator early (client gone) drops its row at the next step."""
        return self._stream(lambda emit: Job(work, self.new_future(), emit=emit))

    async def _stream(self, job_with: Callable[[Callable[[Any], None]], Job]) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        job = job_with(lambda item: loop.call_soon_threadsafe(items.put_nowait, item))

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

    async def call(self, kind: str, fn: Callable[..., Any], *args: Any, tokens: int = 0, priced: bool = True) -> Any:
        """Run `fn(*args)` alone on the worker thread, through the queue (`priced` False: the
        server's own work, e.g. the warm-up, which admission does not refuse)."""
        return await self.enqueue(Job(CallWork(kind, fn, args, tokens), self.new_future()), priced)

    def new_future(self) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    async def enqueue(self, job: Job, priced: bool = True) -> Any:
        if self.stopped is not None:
            raise BackendError(self.stopped)
        if self._closing:
            raise NotReadyError("the server is shutting down: retry on another replica")
        if priced:
            self.admit(job)
        self._queue.append(job)
        metrics.QUEUE_DEPTH.set(len(self._queue))
        self._arrived.set()
        try:
            return await job.future
        except asyncio.CancelledError:  # the caller left: a queued job gives its slot back at once
            if job in self._queue:
                self._pop(self._queue.index(job))
                self._arrived.set()  # a wait for company planned with it wakes and plans again
            job.cancelled = True  # a running decode leaves the batch at the next step, a sliced job stops
            raise

    def admit(self, job: Job) -> None:
        """Price the job (with the other jobs of its HTTP request) and refuse it early: 413 above
        what one request may cost, 429 (with Retry-After) while the queue is full or the work
        ahead would make it wait too long. Admitted, it is charged to its request."""
        charge = REQUEST_CHARGE.get()
        tokens = job.cost + (charge.tokens if charge else 0)
        rows = (job.rows if job.decode else 0) + (charge.rows if charge else 0)
        if self.max_request_tokens is not None and tokens > self.max_request_tokens:
            self.refuse(job.kind, PayloadTooLargeError(too_costly(job.kind, tokens, self.max_request_tokens)))
        if rows > self.max_running_rows:
            self.refuse(job.kind, PayloadTooLargeError(too_many_rows(rows, self.max_running_rows)))
        queued = self.queued_tokens
        if len(self._queue) >= self.max_queue or (
                self.max_queued_tokens is not None and self._queue and queued + job.cost > self.max_queued_tokens):
            self.refuse(job.kind, self.queue_full(f"{len(self._queue)} requests, {queued} tokens waiting"))
        own = charge.ahead if charge else 0
        rate, ahead, wait = self.drain.per_second, self.work_ahead - own, self.estimated_wait_s(own)
        if self.max_queue_wait_s is not None and rate and wait > self.max_queue_wait_s:
            after = retry_after_s(wait * rate, rate, self.max_queue_wait_s)
            self.refuse(job.kind, OverloadedError(
                f"the model is busy: this request would wait ~{wait:.0f} s behind {ahead} tokens of work "
                f"(the limit is {self.max_queue_wait_s:g} s): retry after {after:g} s", retry_after=after))
        if charge is not None:
            charge.tokens, charge.rows = tokens, rows
            charge.ahead += job.ahead(self.max_batch_tokens)

    def queue_full(self, what: str) -> OverloadedError:
        """The 429 of a full queue (`what`: what fills it)."""
        return OverloadedError(f"the model queue is full ({what}): retry after {self.retry_after_s:g} s",
                               retry_after=self.retry_after_s)

    @staticmethod
    def refuse(kind: str, error: MagnetError) -> None:
        metrics.REJECTED.labels(kind).inc()
        raise error

    # --- the loop ----------------------------------------------------------------------

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()  # the loop that owns the queue (for other threads)
        self._task = asyncio.create_task(self._loop(), name="magnet-model-worker")
        self._task.add_done_callback(self._on_loop_end)

    def _on_loop_end(self, task: asyncio.Task) -> None:
        """A loop that ended on an error (a bug) answers every job waiting on it with a 500, and
        every later one (`stopped`: /ready says it), instead of leaving them unanswered."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("the model worker stopped", exc_info=error)
        self.stopped = f"the model worker stopped ({type(error).__name__}: {error}): restart the server"
        for job in [*self._queue, *self._running_jobs, *self._slicing]:
            if not job.future.done():
                job.future.set_exception(BackendError(self.stopped))
        self._queue.clear()

    async def close(self) -> None:
        """Refuse new work, finish everything queued and decoding, then stop the thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await asyncio.wait([self._task])  # an error it ended on is answered and logged (_on_loop_end)
        self._executor.shutdown(wait=True)
        self._tokenizer.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while (work := await self._next_work()) is not None:
            slices, joining = work
            started = time.perf_counter()
            for job in [*{id(part.job): part.job for part in slices}.values(), *joining]:
                if not job.started:
                    job.started = started
                    metrics.STAGE_LATENCY.labels("queue", job.kind).observe(started - job.enqueued)
            self._in_flight = sum(part.tokens for part in slices) + sum(job.tokens for job in joining)
            self._in_flight_since = started
            ended, processed = await loop.run_in_executor(self._executor, self._iterate, slices, joining)
            self._in_flight = 0
            self.drain.record(processed, time.perf_counter() - started)
            self._settle(ended)
            self._slicing = []
            metrics.RUNNING.set(len(self._running_jobs))

    def _settle(self, outcomes: list[tuple[Job | Slice, bool, Any]]) -> None:
        """Complete the jobs that ended, and put sliced jobs with items left back in the queue
        (on the event loop)."""
        ended = time.perf_counter()
        for item, ok, value in outcomes:
            job = item.job if isinstance(item, Slice) else item
            if job in self._slicing:
                self._slicing.remove(job)
            if job.decode:  # prefill to last token (a one-shot job's model time is its batch's)
                metrics.STAGE_LATENCY.labels("model", job.kind).observe(ended - job.started)
            if job.future.done() or job.cancelled:
                continue  # its client has gone: no more slices
            if not ok:
                job.future.set_exception(value)
            elif isinstance(item, Slice) and job.sizes is not None:
                job.partial.extend(value)
                job.done = item.stop
                if item.last:
                    job.future.set_result(job.partial)
                else:  # the rest waits its turn: what came meanwhile runs first
                    self._queue.append(job)
                    metrics.QUEUE_DEPTH.set(len(self._queue))
                    self._arrived.set()
            else:
                job.future.set_result(value)

    async def _next_work(self) -> tuple[list[Slice], list[Job]] | None:
        """(one-shot slices, decodes joining) for the next iteration; None once closed and idle."""
        while not self._queue:
            if self._running_jobs:
                return [], []  # keep stepping
            if self._closing:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        if not self._running_jobs:
            await self._await_preparing()
        joining = self._take_joining()
        slices = await self._next_slices(wait=not (joining or self._running_jobs))
        return slices, joining

    async def _await_preparing(self) -> None:
        """An idle worker waits (until max_wait after its oldest queued job) while requests that
        have already arrived are being tokenized. A burst of decodes then starts as one prefill;
        started without them, the first would be prefilled and stepped alone while the rest wait
        behind it. A request that arrives alone finds nothing being prepared and does not wait."""
        deadline = min(job.enqueued for job in self._queue) + self.max_wait_s
        while self._preparing:
            if not await self._next_arrival(deadline):
                return

    async def _next_arrival(self, deadline: float) -> bool:
        """Wait until a job is queued (True), or until `deadline` (perf_counter) or shutdown (False)."""
        remaining = deadline - time.perf_counter()
        if remaining <= 0 or self._closing:
            return False
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), remaining)
        except asyncio.TimeoutError:
            return False
        return True

    def _take_joining(self) -> list[Job]:
        running = self._running_jobs
        joining = plan_joining(self._queue, sum(job.rows for job in running), sum(job.kv_tokens for job in running),
                               self.max_running_rows, self.max_running_tokens, self.max_batch_tokens)
        for job in joining:
            self._pop(self._queue.index(job))
        self._running_jobs.extend(joining)
        return joining

    async def _next_slices(self, wait: bool) -> list[Slice]:
        """The one-shot slices to run (plan_oneshot); waits up to max_wait for company only when
        `wait` (nothing else to do) and the budget is not full yet."""
        slices = plan_oneshot(self._queue, self.max_batch_tokens)
        if not slices:
            return []
        first = slices[0].job
        deadline = first.enqueued + self.max_wait_s
        while (wait and first.key is not None and sum(s.tokens for s in slices) < self.max_batch_tokens
               and await self._next_arrival(deadline)):
            slices = plan_oneshot(self._queue, self.max_batch_tokens)
        slices = plan_oneshot(self._queue, self.max_batch_tokens)  # a caller may have left while it waited
        for part in slices:
            self._pop(self._queue.index(part.job))
        self._slicing = [part.job for part in slices if not part.last]
        return [part for part in slices if not part.job.future.done()]  # drop requests already gone

    def _pop(self, index: int) -> Job:
        job = self._queue[index]
        del self._queue[index]
        metrics.QUEUE_DEPTH.set(len(self._queue))
        return job

    # --- one iteration, on the worker thread -------------------------------------------

    def _iterate(self, slices: list[Slice], joining: list[Job]) -> tuple[list[tuple[Any, bool, Any]], int]:
        """Run the one-shot slices, prefill the joining decodes into their model's running batch,
        then step every running batch once. Returns (job or slice, ok, result-or-error) for every
        one that ended, and the tokens of model work done (for the drain rate)."""
        ended, processed = [], 0
        if slices:  # answered now, not after the decode step: an embed waits for at most one step
            done = [(part, ok, value) for part, (ok, value) in zip(slices, run_batch(slices))]
            processed += sum(part.tokens for part in slices)
            if self._running or joining:
                self.loop.call_soon_threadsafe(self._settle, done)
            else:
                ended = done
        for group in group_by_key(joining):
            ended += self._join(group)
            processed += sum(job.tokens for job in group)
        for model, running in list(self._running.items()):
            rows = running.rows
            ended += self._step(running)
            processed += rows
            running.drop([d for d in running.decodes if d.owner.cancelled])  # clients that left during the step
            if not running:  # empty: the model's next decode starts a batch of its own
                del self._running[model]
        # what the batches hold, so a row (and its cache) is never kept without a job to step it
        self._running_jobs = [decode.owner for running in self._running.values() for decode in running.decodes]
        return ended, processed

    def _join(self, group: list[Job]) -> list[tuple[Job, bool, Any]]:
        """Prefill a group of one key together into its model's running batch; returns the jobs
        that failed (on bad input, each alone: `own_outcomes`)."""
        started = time.perf_counter()

        def prefill(jobs: list[Job]) -> list[None]:
            batch = jobs[0].run([job.payload for job in jobs])
            for job, decode in zip(jobs, batch.decodes):
                decode.owner = job
            model = jobs[0].model  # one key, one model
            if model in self._running:
                self._running[model].merge(batch)
            elif batch:
                self._running[model] = batch
            return [None] * len(jobs)

        outcomes = own_outcomes(group, prefill, "prefill")
        metrics.STAGE_LATENCY.labels("prefill", group[0].kind).observe(time.perf_counter() - started)
        return [(job, ok, value) for job, (ok, value) in zip(group, outcomes) if not ok]

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
                ended.append((decode.owner, True, decode.outcome()))
            except Exception as exc:
                log.exception("model worker failed to finish a %s", decode.owner.kind)
                ended.append((decode.owner, False, BackendError(f"{decode.owner.kind} failed: {exc}")))
        return ended


# --- on the worker thread -------------------------------------------------------------


def run_batch(slices: list[Slice]) -> list[tuple[bool, Any]]:
    """Run one-shot slices group by group (one engine call per key); one (ok, result-or-error) each."""
    outcomes: dict[int, tuple[bool, Any]] = {}
    for group in group_by_key(slices):
        started = time.perf_counter()
        results = own_outcomes(group, lambda parts: parts[0].run([part.payload for part in parts]), "batch")
        for part, outcome in zip(group, results):
            outcomes[id(part)] = outcome
        elapsed = time.perf_counter() - started
        kind = group[0].kind
        metrics.BATCH_SIZE.labels(kind).observe(len(group))
        metrics.BATCH_TOKENS.labels(kind).observe(sum(part.tokens for part in group))
        for part in group:
            metrics.STAGE_LATENCY.labels("model", part.kind).observe(elapsed)
    return [outcomes[id(part)] for part in slices]


def group_by_key(batch: list) -> list[list]:
    groups: dict[Any, list] = {}
    for item in batch:
        groups.setdefault(item.key if item.key is not None else id(item), []).append(item)
    return list(groups.values())


def own_outcomes(group: list, call: Callable[[list], list], what: str) -> list[tuple[bool, Any]]:
    """`call(group)` -> (ok, result-or-error) per member. The one retry-alone rule: when a merged
    call fails on bad input (a MagnetError), its members run again one by one, so one request's
    bad input does not fail its neighbours; any other failure fails the whole group (a 500 for
    these requests only)."""
    try:
        return [(True, result) for result in call(group)]
    except MagnetError as exc:
        if len(group) == 1:
            return [(False, exc)]
        return [outcome for member in group for outcome in own_outcomes([member], call, what)]
    except Exception as exc:
        log.exception("model worker failed on a %s %s of %d", group[0].kind, what, len(group))
        return [(False, BackendError(f"{group[0].kind} failed: {type(exc).__name__}: {exc}"))] * len(group)
