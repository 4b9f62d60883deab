"""The model worker: one thread, a bounded queue, dynamic batching, per-request results.

Every timing-sensitive case blocks the worker with a threading.Event first,
so what is queued when it resumes is known exactly.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from magnet.errors import BackendError, InvalidInputError, NotReadyError, OverloadedError
from magnet.sampling import SamplingParams, StreamChunk
from magnet.server.testing import app_with, occupy_worker, running_app, stream_decode, submit, submit_decode
from magnet.server.worker import ModelWorker


def make_worker(max_queue=16, budget=1000, wait=0.0) -> ModelWorker:
    worker = ModelWorker(max_queue=max_queue, max_batch_tokens=budget, max_wait_s=wait)
    worker.start()
    return worker


async def until_depth(worker: ModelWorker, depth: int) -> None:
    while worker.depth != depth:
        await asyncio.sleep(0.001)


async def until_running(worker: ModelWorker) -> None:
    while not worker.running:
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
    jobs = [asyncio.ensure_future(submit(worker, "embed", ("k",), p, run, tokens=1)) for p in "abc"]
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
    jobs = [asyncio.ensure_future(submit(worker, "embed", ("k",), p, run, tokens=4)) for p in "abc"]
    await until_depth(worker, 3)
    release.set()
    assert await asyncio.gather(*jobs) == ["aa", "bb", "cc"]
    assert run.calls == [["a", "b"], ["c"]]
    await worker.close()


async def test_different_keys_run_as_separate_calls():
    worker, run = make_worker(), Recorder()
    release, _ = await occupy_worker(worker)
    keys = [("embed", 1), ("tag", "ner"), ("embed", 1)]
    jobs = [asyncio.ensure_future(submit(worker, "x", key, p, run, 1)) for key, p in zip(keys, "abc")]
    await until_depth(worker, 3)
    release.set()
    assert await asyncio.gather(*jobs) == ["aa", "bb", "cc"]
    assert sorted(run.calls) == [["a", "c"], ["b"]]
    await worker.close()


async def test_a_bad_job_fails_alone_and_its_neighbours_succeed():
    worker, run = make_worker(), Recorder()
    release, _ = await occupy_worker(worker)
    jobs = [asyncio.ensure_future(submit(worker, "embed", ("k",), p, run, 1)) for p in ("a", "bad", "c")]
    await until_depth(worker, 3)
    release.set()
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert results[0] == "aa" and results[2] == "cc"
    assert isinstance(results[1], InvalidInputError) and "'bad'" in str(results[1])
    await worker.close()


async def test_an_unexpected_exception_becomes_a_backend_error():
    worker = make_worker()
    with pytest.raises(BackendError, match="RuntimeError: boom"):
        await submit(worker, "embed", ("k",), "bug", Recorder(), 1)
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
    jobs = [asyncio.ensure_future(submit(worker, "embed", ("k",), p, run, 1)) for p in "ab"]
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
    gone = asyncio.ensure_future(submit(worker, "embed", ("k",), "gone", run, 1))
    kept = asyncio.ensure_future(submit(worker, "tag", ("t",), "kept", run, 1))
    await until_depth(worker, 2)
    gone.cancel()
    release.set()
    assert await kept == "keptkept"
    assert run.calls == [["kept"]]
    await worker.close()


# --- the decode scheduler (tiny random Llama) --------------------------------------------

GREEDY = SamplingParams(max_tokens=12)


def generate_start(engine, counted: list | None = None):
    """A StartGroup for generate jobs (payloads: (prompt, params)); records each call's size."""
    def start(payloads):
        if counted is not None:
            counted.append(len(payloads))
        return engine.start_generate([p for p, _ in payloads], [q for _, q in payloads])
    return start


def alone(engine, prompt: str, params: SamplingParams = GREEDY) -> str:
    return engine.generate(prompt, params).text


async def collect(stream) -> tuple[str, StreamChunk]:
    chunks = [chunk async for chunk in stream]
    return "".join(c.text for c in chunks), chunks[-1]


async def test_a_stream_yields_pieces_then_the_final_chunk_and_equals_a_call_alone(tiny_engine):
    worker = make_worker()
    stream = stream_decode(worker, "generate", ("generate",), ("The quick", GREEDY), generate_start(tiny_engine))
    text, last = await collect(stream)
    assert text == alone(tiny_engine, "The quick")
    assert last.finish_reason == "length" and last.completion_tokens == 12
    await worker.close()


async def test_streams_that_join_mid_decode_get_what_they_would_alone_and_closing_one_drops_its_row(tiny_engine):
    worker = make_worker()
    long = SamplingParams(max_tokens=200)
    leaver = stream_decode(worker, "generate", ("generate",), ("Leave early", long), generate_start(tiny_engine))
    await anext(leaver)  # decoding now
    prompts = ["The quick", "Once upon a time", "In the"]
    streams = []
    for prompt in prompts:  # each joins a batch that is already stepping
        streams.append(asyncio.ensure_future(collect(stream_decode(worker, 
            "generate", ("generate",), (prompt, GREEDY), generate_start(tiny_engine)))))
        await asyncio.sleep(0.01)
    await leaver.aclose()
    results = await asyncio.gather(*streams)
    assert [text for text, _ in results] == [alone(tiny_engine, p) for p in prompts]
    while worker.running:  # the leaver's row is dropped at the next step, not decoded to 200 tokens
        await asyncio.sleep(0.005)
    assert worker.running == 0 and sum(batch.rows for batch in worker._running.values()) == 0
    await worker.close()


async def test_decodes_queued_together_are_prefilled_in_one_call(tiny_engine):
    worker, calls = make_worker(), []
    release, held = await occupy_worker(worker)
    prompts = [f"Story {i} begins" for i in range(5)]
    jobs = [asyncio.ensure_future(submit_decode(worker, "generate", ("generate",), (p, GREEDY),
                                                       generate_start(tiny_engine, calls), tokens=20))
            for p in prompts]
    await until_depth(worker, 5)
    release.set()
    finals = await asyncio.gather(*jobs)
    await held
    assert calls == [5]
    assert all(f.finish_reason == "length" for f in finals)
    await worker.close()


async def test_an_idle_worker_waits_for_a_request_being_tokenized_and_prefills_both_together(tiny_engine):
    worker, calls = make_worker(wait=30.0), []  # a wait that never runs out here: only the arrival ends it
    tokenizing = threading.Event()

    async def second_request():  # as a route does: tokenize, then queue its job
        prompt = await worker.tokenize("generate", lambda: tokenizing.wait(30) and "Story 1 begins")
        return await submit_decode(worker, "generate", ("generate",), (prompt, GREEDY),
                                   generate_start(tiny_engine, calls), tokens=20)

    second = asyncio.ensure_future(second_request())
    await asyncio.sleep(0)  # the second is on the tokenizer thread now
    first = asyncio.ensure_future(submit_decode(worker, "generate", ("generate",), ("Story 0 begins", GREEDY),
                                                generate_start(tiny_engine, calls), tokens=20))
    try:
        await asyncio.sleep(0.2)
        assert calls == [] and worker.depth == 1  # the first waits while the second is being tokenized
    finally:
        tokenizing.set()
    assert [(await job).completion_tokens for job in (first, second)] == [12, 12]
    assert calls == [2]  # one prefill for both
    await worker.close()


async def test_a_lone_decode_does_not_wait_for_company(tiny_engine):
    worker = make_worker(wait=30.0)
    final = await asyncio.wait_for(submit_decode(worker, "generate", ("generate",), ("Alone", GREEDY),
                                                 generate_start(tiny_engine), tokens=20), 10)
    assert final.completion_tokens == 12
    await worker.close()


async def test_an_embed_submitted_during_a_long_decode_finishes_before_it(tiny_engine):
    worker = make_worker()
    long = SamplingParams(max_tokens=tiny_engine.max_length - 16)
    decode = asyncio.ensure_future(submit_decode(worker, "generate", ("generate",), ("A long story", long),
                                                        generate_start(tiny_engine), tokens=long.max_tokens))
    await asyncio.wait_for(until_running(worker), 30)
    vectors = await submit(worker, "embed", ("embed",), ["a fox"],
                                  lambda payloads: [tiny_engine.embed(p).embeddings for p in payloads], 4)
    assert vectors.shape[0] == 1
    assert not decode.done()  # the embed ran between two decode steps, not after the generation
    assert (await decode).completion_tokens == long.max_tokens
    await worker.close()


async def test_running_rows_are_limited_and_the_rest_wait_in_the_queue(tiny_engine):
    worker = ModelWorker(max_queue=16, max_batch_tokens=1000, max_wait_s=0.0, max_running_rows=2)
    worker.start()
    release, held = await occupy_worker(worker)
    jobs = [asyncio.ensure_future(submit_decode(worker, "generate", ("generate",), (f"Row {i}", GREEDY),
                                                       generate_start(tiny_engine), tokens=20)) for i in range(5)]
    await until_depth(worker, 5)
    release.set()
    seen = set()
    while not all(job.done() for job in jobs):
        seen.add(worker.running)
        await asyncio.sleep(0)
    await held
    assert max(seen) == 2
    assert [(await job).completion_tokens for job in jobs] == [12] * 5
    await worker.close()


async def test_a_decode_whose_prefill_fails_gets_its_own_error_and_the_others_run(tiny_engine):
    worker = make_worker()
    release, held = await occupy_worker(worker)
    good = asyncio.ensure_future(submit_decode(worker, "generate", ("generate",), ("Fine", GREEDY),
                                                      generate_start(tiny_engine), tokens=20))
    bad = asyncio.ensure_future(submit_decode(worker, "generate", ("generate",), ("", GREEDY),
                                                     generate_start(tiny_engine), tokens=20))
    await until_depth(worker, 2)
    release.set()
    with pytest.raises(InvalidInputError, match="prompt is empty"):
        await bad
    assert (await good).completion_tokens == 12
    await held
    await worker.close()


async def test_concurrent_infills_are_decoded_together_and_equal_single_calls(tiny_engine):
    from dataclasses import replace

    from magnet.sampling import INFILL_DEFAULTS

    app = app_with(tiny_engine, max_wait_ms=50)
    calls = []
    original = tiny_engine.start_infill_rows

    def counted(requests, rows):
        calls.append(len(requests))
        return original(requests, rows)

    gaps = [[f"Story {i} begins ", " and ends well."] for i in range(6)]
    async with running_app(app) as http:
        tiny_engine.start_infill_rows = counted
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
            del tiny_engine.start_infill_rows
    assert calls == [6]  # one prefill for all six requests
    for (prefix, suffix), answer in zip(gaps, answers):
        alone = tiny_engine.infill([prefix, suffix], replace(INFILL_DEFAULTS, max_tokens=5))
        assert answer["fills"] == alone.fills


async def test_close_finishes_the_running_decodes_first(tiny_engine):
    worker = make_worker()
    decode = asyncio.ensure_future(submit_decode(worker, "generate", ("generate",), ("Before the stop", GREEDY),
                                                        generate_start(tiny_engine), tokens=20))
    await asyncio.wait_for(until_running(worker), 30)
    await worker.close()
    assert (await decode).completion_tokens == 12


async def test_a_failing_decode_step_fails_its_rows_and_the_worker_goes_on(tiny_engine, monkeypatch):
    from magnet.batch import DecodeBatch

    worker = make_worker()
    original, calls = DecodeBatch.forward, []

    def fails_once(self, fed):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return original(self, fed)

    monkeypatch.setattr(DecodeBatch, "forward", fails_once)
    with pytest.raises(BackendError, match="decoding failed: RuntimeError: out of memory"):
        await submit_decode(worker, "generate", ("generate",), ("Doomed", GREEDY), generate_start(tiny_engine), 20)
    after = await submit_decode(worker, "generate", ("generate",), ("Fine", GREEDY), generate_start(tiny_engine), 20)
    assert after.completion_tokens == 12 and worker.running == 0
    await worker.close()


async def test_decodes_of_two_models_run_in_a_batch_each_and_a_failing_one_fails_only_its_rows(tiny_engine,
                                                                                               monkeypatch):
    from magnet.batch import DecodeBatch

    worker = make_worker()
    release, held = await occupy_worker(worker)
    jobs = {model: asyncio.ensure_future(submit_decode(worker, "generate", ("generate", model), ("A story", GREEDY),
                                                              generate_start(tiny_engine), 20, model=model))
            for model in ("a", "b")}
    await until_depth(worker, 2)
    original, batches = DecodeBatch.forward, set()

    def fails_in_b(self, fed):
        batches.add(id(self))
        if self is worker._running.get("b"):
            raise RuntimeError("out of memory")
        return original(self, fed)

    monkeypatch.setattr(DecodeBatch, "forward", fails_in_b)
    release.set()
    await held
    assert (await jobs["a"]).text == alone(tiny_engine, "A story")
    with pytest.raises(BackendError, match="out of memory"):
        await jobs["b"]
    assert len(batches) >= 2 and worker.running == 0 and not worker._running
    await worker.close()


async def test_a_client_that_leaves_during_a_step_frees_its_row_with_no_other_work(tiny_engine, monkeypatch):
    # the step is where the worker spends its time: a client leaving then must not leave its
    # row and cache in the batch with no job to step it (nothing else arrives to clear it)
    from magnet.batch import DecodeBatch

    step = DecodeBatch.step
    stepping = threading.Event()

    def slow_step(self):
        stepping.set()
        threading.Event().wait(0.1)
        return step(self)

    monkeypatch.setattr(DecodeBatch, "step", slow_step)
    worker = make_worker()
    leaver = stream_decode(worker, "generate", ("generate",), ("Leave early", SamplingParams(max_tokens=200)),
                           generate_start(tiny_engine))
    await anext(leaver)
    stepping.clear()
    await asyncio.get_running_loop().run_in_executor(None, stepping.wait)  # inside a step now
    await leaver.aclose()
    for _ in range(200):
        if not worker._running:
            break
        await asyncio.sleep(0.01)
    assert worker._running == {} and worker.running == 0
    await worker.close()


async def test_a_caller_that_leaves_while_its_batch_waits_for_company_leaves_the_worker_serving():
    # the worker planned a batch with the job, then waited (max_wait) for company; the job left
    worker = make_worker(wait=0.3)
    upper = lambda payloads: [p.upper() for p in payloads]  # noqa: E731  (one result per payload)
    leaving = asyncio.ensure_future(submit(worker, "embed", ("embed",), "gone", upper, tokens=1))
    await asyncio.sleep(0.05)  # planned, waiting
    leaving.cancel()
    assert await asyncio.wait_for(submit(worker, "embed", ("embed",), "next", upper, tokens=1), 5) == "NEXT"
    assert not worker._task.done() and worker.stopped is None
    await worker.close()


async def test_a_worker_loop_that_dies_answers_every_waiting_job_and_says_so(monkeypatch):
    worker = make_worker()
    release, held = await occupy_worker(worker)
    waiting = asyncio.ensure_future(submit(worker, "embed", ("embed",), "a", lambda p: p, tokens=1))
    await until_depth(worker, 1)

    async def broken(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ModelWorker, "_next_work", broken)
    release.set()
    await held
    with pytest.raises(BackendError, match="the model worker stopped"):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(BackendError, match="restart the server"):
        await submit(worker, "embed", ("embed",), "b", lambda p: p, tokens=1)
    await worker.close()  # does not raise the loop's error again


async def test_a_full_queue_refuses_before_tokenizing():
    # the tokenizer thread is one: a request that would find the queue full must not wait for it
    import threading

    worker = ModelWorker(max_queue=2, max_batch_tokens=10, max_wait_s=0.0, retry_after_s=3.0)
    worker.start()
    release, _ = await occupy_worker(worker)
    queued = asyncio.ensure_future(worker.call("infill", lambda: 0))
    await until_depth(worker, 1)
    tokenizing = threading.Event()
    slow = asyncio.ensure_future(worker.tokenize("embed", tokenizing.wait))  # holds the tokenizer thread
    await asyncio.sleep(0.05)
    ran = []
    try:
        with pytest.raises(OverloadedError, match="1 being tokenized") as refused:
            await asyncio.wait_for(worker.tokenize("embed", lambda: ran.append(1)), 5)
    finally:
        tokenizing.set()  # the thread is freed whatever happened
    assert refused.value.retry_after == 3.0 and ran == []
    release.set()
    assert await slow is True and await queued == 0
    await worker.close()
