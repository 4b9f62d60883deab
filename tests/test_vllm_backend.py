"""The vLLM generate backend on the real embedded model (one engine for the module).

Each engine start costs ~25-60 s on CPU, so every test here shares one; the
engine lives on its own event loop thread because it is bound to the loop it
started on (pytest-asyncio is not needed).
"""
from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("vllm", exc_type=ImportError)

from prometheus_client import REGISTRY  # noqa: E402

from magnet.errors import InputTooLongError, InvalidInputError  # noqa: E402
from magnet.loading import ModelSpec  # noqa: E402
from magnet.sampling import SamplingParams  # noqa: E402

pytestmark = pytest.mark.slow

SPEC = ModelSpec(device="cpu", dtype="float32")
PROMPTS = ["The capital of France is", "def fibonacci(n):"]


class LoopThread:
    """An event loop on a daemon thread; `run(coro)` waits for its result."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Settings:  # the fields the backend reads (the server's Settings has them too)
    vllm_kv_cache_gb = 0.5
    vllm_max_model_len = 512


@pytest.fixture(scope="module")
def running():
    from magnet.server.vllm_backend import VllmGenerateBackend

    loop = LoopThread()
    backend = VllmGenerateBackend(Settings(), SPEC)
    loop.run(backend.start())
    yield loop, backend
    loop.run(backend.close())
    loop.stop()


def exact_fp32():
    """vLLM runs every product in fp32 here: so does the torch engine it is compared with (the
    bf16 copies of magnet/narrow.py, timed at load, would part from it at near ties)."""
    from magnet.engine import EngineConfig
    from magnet.narrow import Tiers

    return EngineConfig(narrow_tiers=Tiers())


@pytest.fixture(scope="module")
def torch_engine():
    from magnet.engine import Engine

    return Engine.from_spec(SPEC, exact_fp32())


async def collect(stream, keep: int | None = None) -> list:
    """The stream's chunks; with `keep`, close it after that many."""
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        if keep is not None and len(chunks) == keep:
            await stream.aclose()
            break
    return chunks


def vllm_gauge(name: str) -> float:
    return sum(s.value for m in REGISTRY.collect() for s in m.samples if s.name == name)


# Some prompts end at EOS within the budget: both paths count that EOS in the usage, as vLLM does.
@pytest.mark.parametrize("prompt", [PROMPTS[0], PROMPTS[1], "Write a long story about a dragon."])
def test_greedy_equals_torch_path(running, torch_engine, prompt):
    loop, backend = running
    params = SamplingParams(max_tokens=24, temperature=0.0)
    got = loop.run(backend.generate(prompt, params))
    want = torch_engine.generate(prompt, params)
    assert got.text == want.text
    assert (got.finish_reason, got.prompt_tokens, got.completion_tokens) == (
        want.finish_reason, want.prompt_tokens, want.completion_tokens)


def test_penalties_mean_the_same_on_both_paths(running, torch_engine):
    loop, backend = running
    from dataclasses import replace

    from vllm.sampling_params import RequestOutputKind

    from magnet.server.vllm_backend import vllm_params

    params = SamplingParams(max_tokens=32, temperature=0.0, repetition_penalty=1.3, frequency_penalty=0.4,
                            presence_penalty=0.2)
    mapped = vllm_params(replace(params, temperature=1.0, top_k=7, min_p=0.05, ignore_eos=True),
                         RequestOutputKind.FINAL_ONLY)
    assert (mapped.repetition_penalty, mapped.frequency_penalty, mapped.presence_penalty, mapped.top_k,
            mapped.min_p, mapped.ignore_eos) == (1.3, 0.4, 0.2, 7, 0.05, True)  # (greedy: both ignore top_k, min_p)
    for prompt in PROMPTS:
        assert loop.run(backend.generate(prompt, params)).text == torch_engine.generate(prompt, params).text


def test_stop_string_cuts_like_torch_path(running, torch_engine):
    loop, backend = running
    params = SamplingParams(max_tokens=40, temperature=0.0, stop=(".",))
    got = loop.run(backend.generate(PROMPTS[0], params))
    want = torch_engine.generate(PROMPTS[0], params)
    assert got.finish_reason == "stop" and "." not in got.text
    assert got.text == want.text


LOGPROB_TOLERANCE = 1e-3  # float32 on both paths; vLLM's CPU kernels round differently (measured: see docs/generation.md)


def max_logprob_gap(ours, theirs) -> float:
    """The largest difference between two runs' logprobs (the token itself and its alternatives),
    after checking that they scored the same tokens."""
    assert [e.token for e in ours] == [e.token for e in theirs]
    gaps = [abs(a.logprob - b.logprob) for a, b in zip(ours, theirs) if a.logprob is not None or b.logprob is not None]
    for a, b in zip(ours, theirs):
        assert len(a.top) == len(b.top)
        gaps += [abs(x - y) for (_, x), (_, y) in zip(a.top, b.top)]  # by rank: near-ties may swap ids
    return max(gaps)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logprobs_equal_torch_path(running, torch_engine, prompt):
    """Generated and prompt (echo) logprobs: the same tokens, the same raw log-softmax numbers."""
    loop, backend = running
    params = SamplingParams(max_tokens=8, temperature=0.0, logprobs=3, prompt_logprobs=3)
    got = loop.run(backend.generate(prompt, params))
    want = torch_engine.generate(prompt, params)
    assert got.text == want.text and len(got.logprobs) == got.completion_tokens
    assert got.prompt_logprobs[0].logprob is None and len(got.prompt_logprobs) == got.prompt_tokens
    assert max_logprob_gap(got.logprobs, want.logprobs) < LOGPROB_TOLERANCE
    assert max_logprob_gap(got.prompt_logprobs, want.prompt_logprobs) < LOGPROB_TOLERANCE


def test_echo_without_generation_scores_the_prompt_only(running, torch_engine):
    loop, backend = running
    params = SamplingParams(max_tokens=0, logprobs=1, prompt_logprobs=1)
    got = loop.run(backend.generate(PROMPTS[0], params))
    want = torch_engine.generate(PROMPTS[0], params)
    assert (got.text, got.completion_tokens, got.finish_reason, got.logprobs) == ("", 0, "length", [])
    assert max_logprob_gap(got.prompt_logprobs, want.prompt_logprobs) < LOGPROB_TOLERANCE


def test_structured_output_through_vllm(running, torch_engine):
    """Choice, regex and JSON schema reach vLLM's own structured-output backend; a choice's
    greedy pick is the torch path's."""
    import json
    import re

    from magnet.sampling import StructuredOutput

    loop, backend = running
    choice = SamplingParams(max_tokens=8, structured=StructuredOutput(choice=(" Paris", " London", " a city")))
    got = loop.run(backend.generate(PROMPTS[0], choice))
    assert got.text in (" Paris", " London", " a city") and got.text == torch_engine.generate(PROMPTS[0], choice).text
    digits = loop.run(backend.generate("My number is", SamplingParams(max_tokens=12, temperature=1.0, seed=1,
                                                                      structured=StructuredOutput(regex=r" \d{3}-\d{2}"))))
    assert re.fullmatch(r" \d{3}-\d{2}", digits.text)
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}
    person = loop.run(backend.generate("The capital of France as JSON:", SamplingParams(
        max_tokens=40, structured=StructuredOutput(json=json.dumps(schema)))))
    assert set(json.loads(person.text)) == {"city"}


def test_stream_concatenates_to_full_text(running):
    loop, backend = running
    params = SamplingParams(max_tokens=12, temperature=0.0)
    chunks = loop.run(collect(backend.stream(PROMPTS[1], params)))
    full = loop.run(backend.generate(PROMPTS[1], params))
    assert len(chunks) > 2  # streamed, not one blob
    assert "".join(c.text for c in chunks) == full.text
    assert all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (
        full.finish_reason, full.prompt_tokens, full.completion_tokens)
    assert full.completion_tokens >= 3


def test_closing_stream_aborts_request(running):
    loop, backend = running
    long = SamplingParams(max_tokens=400, temperature=0.0)
    first = loop.run(collect(backend.stream(PROMPTS[1], long), keep=3))
    assert len(first) == 3 and first[-1].finish_reason is None
    assert backend.engine.get_num_unfinished_requests() == 0

    async def next_request():
        stream = backend.stream(PROMPTS[1], SamplingParams(max_tokens=6))
        chunk = await anext(stream)
        running_now = vllm_gauge("vllm:num_requests_running")  # engine-core scheduler state
        rest = await collect(stream)
        return [chunk] + rest, running_now

    chunks, running_now = loop.run(next_request())
    assert running_now == 1  # the aborted request no longer runs in the engine core
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 6


def test_seed_makes_sampling_reproducible(running):
    loop, backend = running

    def sample(seed):
        params = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=seed)
        return loop.run(backend.generate("Once upon a time", params)).text

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_bad_input_is_the_callers(running):
    loop, backend = running
    with pytest.raises(InvalidInputError, match="prompt is empty"):
        loop.run(backend.generate("", SamplingParams()))
    with pytest.raises(InputTooLongError, match="limit is 512"):
        loop.run(backend.generate("word " * 600, SamplingParams(max_tokens=8)))
    assert loop.run(backend.generate("Hi", SamplingParams(max_tokens=2))).completion_tokens == 2


def test_vllm_metrics_in_default_registry(running):
    loop, backend = running
    before = vllm_gauge("vllm:generation_tokens_total")
    got = loop.run(backend.generate(PROMPTS[1], SamplingParams(max_tokens=5)))
    assert got.finish_reason == "length"  # five tokens generated, as usage says
    assert vllm_gauge("vllm:generation_tokens_total") == before + 5


def test_a_killed_engine_is_noticed_answers_503_and_restarts(running):
    """Last in the module: it kills vLLM's engine processes, then brings a new engine up."""
    import os
    import signal
    import time

    import psutil

    from magnet.errors import NotReadyError

    loop, backend = running
    params = SamplingParams(max_tokens=4)
    before = loop.run(backend.generate(PROMPTS[0], params)).text
    engine_processes = [p for p in psutil.Process().children(recursive=True)
                        if p.status() != psutil.STATUS_ZOMBIE  # earlier tests' engines, not yet reaped
                        and "resource_tracker" not in " ".join(p.cmdline())]
    assert engine_processes, "vLLM's engine core runs in a child process"
    killed = time.monotonic()
    for process in engine_processes:
        os.kill(process.pid, signal.SIGKILL)
    while backend.problem() is None and time.monotonic() - killed < 30:
        time.sleep(0.05)
    noticed = time.monotonic() - killed
    assert backend.problem() == "the vLLM engine process died"
    with pytest.raises(NotReadyError):
        loop.run(backend.generate(PROMPTS[0], params))
    loop.run(backend.restart())
    back = time.monotonic() - killed
    assert backend.problem() is None
    assert loop.run(backend.generate(PROMPTS[0], params)).text == before  # the same weights serve again
    print(f"engine death noticed after {noticed:.2f} s, serving again after {back:.1f} s")


def test_the_engine_runs_the_dtype_asked_for(running):
    assert running[1].dtype == "float32"  # SPEC's, as the server passes the torch engine's
