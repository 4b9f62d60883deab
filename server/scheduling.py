"""What the model worker runs next: pure functions of the queue, tested without threads.

A work item (`Job`, server/worker.py, made of the service's typed items of
server/work.py) carries what scheduling reads: its kind and key, its input tokens
(per item, for one-shot jobs over a list), its decode rows and the new tokens those
rows may add. Two choices are made per iteration:

    plan_oneshot(queue, budget)   -> the one-shot slices to run as model calls
    plan_joining(queue, ...)      -> the decodes that join the running batch

Both are bounded by one token budget (`max_batch_tokens`): a one-shot job larger
than the budget runs one slice per iteration (other work runs between its slices,
and it stops at the next slice once its client has gone), and the decodes joining
in one iteration prefill at most a budget's worth of tokens. So no iteration, and
no request's wait behind another, is longer than about two budgets and one step.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Slice:
    """Items [start, stop) of a one-shot job (a job over a single payload: all of it)."""

    job: Any  # server.worker.Job
    start: int = 0
    stop: int = 0

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def key(self) -> tuple | None:
        return self.job.key

    @property
    def run(self):
        return self.job.run

    @property
    def payload(self) -> Any:
        job = self.job
        return job.payload[self.start:self.stop] if job.sizes is not None else job.payload

    @property
    def tokens(self) -> int:
        job = self.job
        return sum(job.sizes[self.start:self.stop]) if job.sizes is not None else job.tokens

    @property
    def last(self) -> bool:
        """Whether this slice finishes its job."""
        return self.job.sizes is None or self.stop >= len(self.job.sizes)


def fitting_slice(job, room: int, first: bool) -> Slice | None:
    """The job's next items that fit in `room` tokens (the batch's first slice: at least one item,
    however big), or None when not even its next item fits."""
    if job.sizes is None:
        return Slice(job) if first or job.tokens <= room else None
    stop, used = job.done, 0
    while stop < len(job.sizes) and (used + job.sizes[stop] <= room or stop == job.done and first):
        used += job.sizes[stop]
        stop += 1
    return Slice(job, job.done, stop) if stop > job.done else None


def plan_oneshot(queue: Sequence, budget: int) -> list[Slice]:
    """The oldest one-shot job's next slice, then slices of queued jobs of its key (oldest first)
    while they fit the token budget; a job with no key runs alone."""
    first = next((job for job in queue if not job.decode), None)
    if first is None:
        return []
    if first.key is None:
        return [Slice(first, 0, 0)]
    slices, room = [], budget
    for job in queue:
        if job.decode or job.key != first.key or room <= 0 and slices:
            continue
        part = fitting_slice(job, room, first=not slices)
        if part is not None:
            slices.append(part)
            room -= part.tokens
    return slices


def plan_joining(queue: Sequence, rows: int, kv_tokens: int, max_rows: int, max_kv_tokens: int,
                 budget: int) -> list:
    """Queued decodes, oldest first, that join the running batches now: while the running rows
    (`rows`, all models together) and their KV tokens stay within the limits, and their prefill
    within the token budget (an idle worker always takes the first, however big). First come,
    first served: a later small decode does not overtake one that does not fit."""
    joining, prefill = [], 0
    for job in queue:
        if not job.decode:
            continue
        fits = (rows + job.rows <= max_rows and kv_tokens + job.kv_tokens <= max_kv_tokens
                and (prefill + job.tokens <= budget or not joining))
        if not fits and (rows or joining):
            break
        joining.append(job)
        rows, kv_tokens, prefill = rows + job.rows, kv_tokens + job.kv_tokens, prefill + job.tokens
    return joining
