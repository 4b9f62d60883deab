"""The model worker: one thread, a bounded queue, dynamic batching, per-request results.

Every timing-sensitive case blocks the worker with a threading.Event first,
so what is queued when it resumes is known exactly.
"""
from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from magnet.errors import BackendError, InvalidInputError, NotReadyError, OverloadedError
from magnet.server.testing import app_with, occupy_worker, running_app
from magnet.server.worker import ModelWorker


def make_worker(max_queue=16, budget=1000, wait=0.0) -> ModelWorker:
    worker = ModelWorker(max_queue=max_queue, max_batch_tokens=budget, max_wait_s=wait)
    worker.start()
    return worker


async def until_depth(worker: ModelWorker, depth: int) -> None:
    while worker.depth != depth:
        await asyncio.sleep(0.001)


class Recorder:
    """A batch function: doubles its payloads and records each call's payloads and thread."""

    def __init__(self):
        self.calls: list[list] = []
        self.threads: set[int] = set()

    def __call__(self, payloads: list) -> list:
        self.calls.append(list(payloads))
        self.threads.add(threading.get_ident())
        if any(p == "bad" for p in payloads):
            raise InvalidInputError("payload 'bad' is refused")
        if any(p == "bug" for p in payloads):
            raise RuntimeError("boom")
        return [p * 2 for p in payloads]


async def test_queued_jobs_with_one_key_run_as_one_call_on_one_thread():
    worker, run = make_worker(), Recorder()
    release, held = await occupy_worker(worker)
    jobs = [asyncio.ensure_future(worker.submit("embed", ("k",), p, run, tokens=1)) for p in "abc"]
    await until_depth(worker, 3)
    release.set()
    assert await asyncio.gather(*jobs) == ["aa", "bb", "cc"]
    assert run.calls == [["a", "b", "c"]]
    assert run.threads and threading.get_ident() not in run.threads
    await held
    await worker.close()


async def test_token_budget_splits_batches():
    worker, run = make_worker(budget=8), Recorder()
    release, _ = await occupy_worker(worker)
    jobs = [asyncio.ensure_future(worker.submit("embed", ("k",), p, run, tokens=4)) for p in "abc"]
    await until_depth(worker, 3)
    release.set()
    assert await asyncio.gather(*jobs) == ["aa", "bb", "cc"]
    assert run.calls == [["a", "b"], ["c"]]
    await worker.close()


async def test_different_keys_run_as_separate_calls():
    worker, run = make_worker(), Recorder()
    release, _ = await occupy_worker(worker)
    keys = [("embed", 1), ("tag", "ner"), ("embed", 1)]
    jobs = [asyncio.ensure_future(worker.submit("x", key, p, run, 1)) for key, p in zip(keys, "abc")]
    await until_depth(worker, 3)
    release.set()
    assert await asyncio.gather(*jobs) == ["aa", "bb", "cc"]
    assert sorted(run.calls) == [["a", "c"], ["b"]]
    await worker.close()


async def test_a_bad_job_fails_alone_and_its_neighbours_succeed():
    worker, run = make_worker(), Recorder()
    release, _ = await occupy_worker(worker)
    jobs = [asyncio.ensure_future(worker.submit("embed", ("k",), p, run, 1)) for p in ("a", "bad", "c")]
    await until_depth(worker, 3)
    release.set()
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert results[0] == "aa" and results[2] == "cc"
    assert isinstance(results[1], InvalidInputError) and "'bad'" in str(results[1])
    await worker.close()


async def test_an_unexpected_exception_becomes_a_backend_error():
    worker = make_worker()
    with pytest.raises(BackendError, match="RuntimeError: boom"):
        await worker.submit("embed", ("k",), "bug", Recorder(), 1)
    assert await worker.call("after", lambda: 42) == 42  # the worker survived
    await worker.close()


async def test_a_full_queue_refuses_at_once_with_retry_after():
    worker = ModelWorker(max_queue=2, max_batch_tokens=10, max_wait_s=0.0, retry_after_s=3.0)
    worker.start()
    release, _ = await occupy_worker(worker)
    queued = [asyncio.ensure_future(worker.call("infill", lambda i=i: i)) for i in range(2)]
    await until_depth(worker, 2)
    with pytest.raises(OverloadedError) as refused:
        await worker.call("infill", lambda: "never")
    assert refused.value.retry_after == 3.0 and "queue is full" in refused.value.message
    release.set()
    assert await asyncio.gather(*queued) == [0, 1]
    await worker.close()


async def test_close_drains_the_queue_and_refuses_new_work():
    worker, run = make_worker(), Recorder()
    release, held = await occupy_worker(worker)
    jobs = [asyncio.ensure_future(worker.submit("embed", ("k",), p, run, 1)) for p in "ab"]
    await until_depth(worker, 2)
    closing = asyncio.ensure_future(worker.close())
    await asyncio.sleep(0)
    with pytest.raises(NotReadyError, match="shutting down"):
        await worker.call("late", lambda: None)
    assert not closing.done()
    release.set()
    await closing
    assert await asyncio.gather(*jobs) == ["aa", "bb"]
    await held


async def test_a_request_cancelled_while_queued_never_runs():
    worker, run = make_worker(), Recorder()
    release, _ = await occupy_worker(worker)
    gone = asyncio.ensure_future(worker.submit("embed", ("k",), "gone", run, 1))
    kept = asyncio.ensure_future(worker.submit("tag", ("t",), "kept", run, 1))
    await until_depth(worker, 2)
    gone.cancel()
    release.set()
    assert await kept == "keptkept"
    assert run.calls == [["kept"]]
    await worker.close()


async def test_stream_yields_in_order_and_closing_early_frees_the_worker():
    worker = make_worker()
    produced = []
    worker_thread = set()

    def counting():
        for i in itertools.count():
            worker_thread.add(threading.get_ident())
            produced.append(i)
            yield i

    stream = worker.stream("generate", counting)
    assert [await anext(stream) for _ in range(3)] == [0, 1, 2]
    await stream.aclose()
    assert await worker.call("next", lambda: "free") == "free"  # the loop stopped, the thread is back
    count = len(produced)
    await worker.call("again", lambda: None)
    assert len(produced) == count  # the generator was closed, not left running
    assert threading.get_ident() not in worker_thread
    await worker.close()


async def test_stream_raises_the_jobs_error():
    worker = make_worker()

    def failing():
        yield "first"
        raise InvalidInputError("stop here")

    received = []
    with pytest.raises(InvalidInputError, match="stop here"):
        async for item in worker.stream("generate", failing):
            received.append(item)
    assert received == ["first"]
    await worker.close()


async def test_concurrent_infills_are_decoded_together_and_equal_single_calls(tiny_engine):
    from dataclasses import replace

    from magnet.sampling import INFILL_DEFAULTS

    app = app_with(tiny_engine, max_wait_ms=50)
    calls = []
    original = tiny_engine.infill_batch

    def counted(requests, params, should_stop=None):
        calls.append(len(requests))
        return original(requests, params, should_stop)

    gaps = [[f"Story {i} begins ", " and ends well."] for i in range(6)]
    async with running_app(app) as http:
        tiny_engine.infill_batch = counted
        try:
            release, held = await occupy_worker(app.state.service.worker)  # let all six queue up
            pending = [asyncio.ensure_future(http.post("/v1/infill", json={"prefix": p, "suffix": s, "max_tokens": 5}))
                       for p, s in gaps]
            while app.state.service.worker.depth < len(gaps):
                await asyncio.sleep(0.005)
            release.set()
            answers = [(await r).json() for r in pending]
            await held
        finally:
            del tiny_engine.infill_batch
    assert calls == [6]  # one engine call for all six requests
    for (prefix, suffix), answer in zip(gaps, answers):
        alone = tiny_engine.infill([prefix, suffix], replace(INFILL_DEFAULTS, max_tokens=5))
        assert answer["fills"] == alone.fills
