"""Admission: a request is priced by the model work it asks for, and refused early.

    price  = input tokens + rows x new tokens       (a job's `cost`, server/worker.py)
    413    one request's price (every job it queues: n choices, best_of candidates) over
           max_request_tokens, or its decode rows over max_running_rows
    429    the estimated wait (the work queued ahead / the measured drain rate) over
           max_queue_wait_s, with Retry-After = how long until it would be admitted

The price is in the same tokens as the scheduler's budgets (server/scheduling.py),
and the drain rate is measured in them: tokens of model work the worker gets through
per second of work (inputs it encodes or prefills, tokens it decodes).
"""
from __future__ import annotations

import collections
import contextvars
import math
from dataclasses import dataclass


@dataclass
class RequestCharge:
    """What one HTTP request has queued so far, over all its jobs (each choice of `n` is a job)."""

    tokens: int = 0
    rows: int = 0
    ahead: int = 0  # what its own queued jobs put ahead of its next one (not a wait: they run together)


# Set per HTTP request by the middleware (server/middleware.py); None outside a request.
REQUEST_CHARGE: contextvars.ContextVar[RequestCharge | None] = contextvars.ContextVar("magnet_request_charge",
                                                                                     default=None)


def new_request_charge() -> contextvars.Token:
    return REQUEST_CHARGE.set(RequestCharge())


def too_costly(kind: str, tokens: int, limit: int) -> str:
    """The 413 message for a request priced over the per-request limit: what to lower."""
    if kind in ("embed", "tag"):
        return (f"this request brings {tokens} input tokens, over the limit of {limit} per request: "
                "split it into smaller requests (or raise MAGNET_MAX_REQUEST_TOKENS)")
    return (f"this request costs {tokens} tokens of model work or more (its input, plus max_tokens for every "
            f"decoded row, n x best_of rows in all), over the limit of {limit} per request: lower max_tokens, n "
            "or best_of, or shorten the input (or raise MAGNET_MAX_REQUEST_TOKENS)")


def too_many_rows(rows: int, limit: int) -> str:
    return (f"this request asks for {rows} decode rows or more (n x best_of), over the {limit} rows that "
            "decode together: "
            "lower n or best_of (or raise MAGNET_MAX_RUNNING_ROWS)")


class DrainRate:
    """Tokens of model work per second, over the last `window_s` seconds of work (idle time
    does not count). None until `min_s` seconds of work are measured (a warm-up is no measure)."""

    def __init__(self, window_s: float = 10.0, min_s: float = 0.1):
        self.window_s = window_s
        self.min_s = min_s
        self._samples: collections.deque[tuple[int, float]] = collections.deque()  # (tokens, seconds)
        self._tokens, self._seconds = 0, 0.0

    def record(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        self._samples.append((tokens, seconds))
        self._tokens += tokens
        self._seconds += seconds
        while len(self._samples) > 1 and self._seconds - self._samples[0][1] >= self.window_s:
            old_tokens, old_seconds = self._samples.popleft()
            self._tokens -= old_tokens
            self._seconds -= old_seconds

    @property
    def per_second(self) -> float | None:
        return self._tokens / self._seconds if self._seconds >= self.min_s else None


def estimated_wait_s(queued_tokens: int, rate: float | None) -> float:
    """Seconds until the work queued ahead is done, at the measured rate (0 before any measure)."""
    return queued_tokens / rate if rate else 0.0


def retry_after_s(queued_tokens: int, rate: float, max_wait_s: float) -> float:
    """How long until the queue has drained to an admissible wait (at least a second)."""
    return max(1.0, math.ceil(queued_tokens / rate - max_wait_s))
