"""One prepared request: its `model` resolved once (server/registry.py), its input tokenized once."""
from __future__ import annotations

import asyncio

import pytest

from magnet.sampling import SamplingParams
from magnet.server.registry import Registry
from magnet.server.testing import app_with, assert_error, running_app

PROMPT = {"prompt": "Once upon a time", "max_tokens": 2, "temperature": 0}


@pytest.fixture
def counted_resolution(monkeypatch):
    """{"resolve": n, "ready": n}: model look-ups and readiness checks so far."""
    from magnet.server.service import Service

    counts = {"resolve": 0, "ready": 0}
    resolve, require_ready = Registry.resolve, Service.require_ready

    def counted_resolve(self, requested):
        counts["resolve"] += 1
        return resolve(self, requested)

    def counted_ready(self):
        counts["ready"] += 1
        return require_ready(self)

    monkeypatch.setattr(Registry, "resolve", counted_resolve)
    monkeypatch.setattr(Service, "require_ready", counted_ready)
    return counts


@pytest.mark.parametrize("route, body", [
    ("/v1/generate", PROMPT),
    ("/v1/generate", {**PROMPT, "stream": True}),
    ("/v1/completions", {**PROMPT, "n": 2}),
    ("/v1/completions", {"prompt": "The cat", "suffix": " on the mat.", "max_tokens": 2}),
    ("/v1/infill", {"segments": ["The cat", " on the mat."], "max_tokens": 2}),
    ("/v1/embed", {"input": ["a", "b"]}),
    ("/v1/embeddings", {"input": [[5, 6, 7]]}),
    ("/v1/score", {"query": "a", "texts": ["b", "c"]}),
    ("/embed", {"inputs": "a"}),
])
async def test_a_request_resolves_its_model_once(tiny_engine, counted_resolution, route, body):
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        counted_resolution.update(resolve=0, ready=0)
        response = await http.post(route, json={"model": "magnet", **body} if route.startswith("/v1") else body)
        assert response.status_code == 200, response.text
    assert counted_resolution == {"resolve": 1, "ready": 1}


async def test_an_unknown_model_is_still_a_404_naming_the_served_ids(tiny_engine):
    async with running_app(app_with(tiny_engine)) as http:
        for route, body in [("/v1/generate", PROMPT), ("/v1/embed", {"input": "a"}),
                            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})]:
            assert_error(await http.post(route, json={**body, "model": "nope"}), 404, "model_not_found",
                         "'nope'", repr(tiny_engine.name), "'magnet'")


@pytest.fixture
def tokenizer_calls(tiny_engine, monkeypatch):
    """The tiny tokenizer's encode calls (`tokenizer(...)`, `tokenizer.encode(...)`), any thread."""
    calls = []
    cls = type(tiny_engine.tokenizer)
    call, encode = cls.__call__, cls.encode

    def counted_call(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("text"))
        return call(self, *args, **kwargs)

    def counted_encode(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("text"))
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", counted_call)
    monkeypatch.setattr(cls, "encode", counted_encode)
    return calls


@pytest.mark.parametrize("route, body", [
    ("/v1/embed", {"input": ["A man plays a guitar.", "The cat sat.", "Rain again."]}),
    ("/v1/embeddings", {"input": ["A man plays a guitar.", "The cat sat."]}),
    ("/v1/score", {"query": "a guitar", "texts": ["A man plays a guitar.", "The cat sat."]}),
    ("/v1/generate", PROMPT),
    ("/v1/generate", {**PROMPT, "stream": True}),
    ("/v1/completions", PROMPT),
    ("/v1/infill", {"prefix": "The cat ", "suffix": " on the mat.", "max_tokens": 3}),
    ("/v1/infill", {"segments": ["The cat ", " on the ", " mat."], "max_tokens": 3, "best_of": 3,
                    "temperature": 0.8, "seed": 1}),
])
async def test_a_request_is_tokenized_once(tiny_engine, tokenizer_calls, route, body):
    """The ids computed to price a request are the ones the model reads: one tokenizer call (the
    default instruction's ids are kept from the warm-up; a best_of infill's candidates share one)."""
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        tokenizer_calls.clear()
        response = await http.post(route, json=body)
        assert response.status_code == 200, response.text
        calls = list(tokenizer_calls)
    if "best_of" in body:  # the candidates are then scored left to right: one more call, on their texts
        assert len(calls) == 2 and isinstance(calls[0], list) and calls[0][0] == "The cat", calls
    else:
        assert len(calls) == 1, calls


async def test_admission_prices_the_ids_the_engine_encodes(tiny_engine):
    """A generate is priced at its prompt's ids as the prefill reads them (special tokens
    included), plus max_tokens: the number in the 413 is exactly that."""
    ids = tiny_engine.prompt_ids(PROMPT["prompt"], SamplingParams(max_tokens=2))
    limit = len(ids) + PROMPT["max_tokens"] - 1
    async with running_app(app_with(tiny_engine, max_request_tokens=limit)) as http:
        refused = await http.post("/v1/generate", json=PROMPT)
        assert_error(refused, 413, "payload_too_large", f"costs {len(ids) + PROMPT['max_tokens']} tokens")
    async with running_app(app_with(tiny_engine, max_request_tokens=limit + 1)) as http:
        assert (await http.post("/v1/generate", json=PROMPT)).status_code == 200


async def test_queued_jobs_carry_their_typed_work_items(tiny_engine):
    """What waits in the queue is inspectable: each job's typed item (server/work.py) with the
    token ids the engine will read, and the price fields admission and scheduling use."""
    from magnet.server.testing import occupy_worker
    from magnet.server.work import EmbedWork, GenerateWork, InfillWork

    app = app_with(tiny_engine)
    bodies = [("/v1/generate", PROMPT), ("/v1/embed", {"input": ["a b", "c"]}),
              ("/v1/infill", {"prefix": "The cat ", "suffix": " on the mat.", "max_tokens": 3, "best_of": 2})]
    async with running_app(app) as http:
        worker = app.state.service.worker
        release, held = await occupy_worker(worker)
        pending = [asyncio.ensure_future(http.post(route, json=body)) for route, body in bodies]
        while worker.depth < len(bodies):
            await asyncio.sleep(0.005)
        jobs = {type(job.work): job for job in worker._queue}
        costs = {kind: job.cost for kind, job in jobs.items()}  # what is left to run: all of it, still queued
        release.set()
        assert [(await answer).status_code for answer in pending] == [200] * len(bodies)
        await held
    generate, embed, infill = jobs[GenerateWork], jobs[EmbedWork], jobs[InfillWork]
    ids = tiny_engine.prompt_ids(PROMPT["prompt"], SamplingParams(max_tokens=2))
    assert generate.work.ids == ids and generate.tokens == len(ids) and generate.kv_tokens == len(ids) + 2
    assert generate.decode and generate.rows == 1 and generate.model == tiny_engine.name
    assert embed.work.ids == tiny_engine.embedding_inputs(["a b", "c"]) and embed.sizes == embed.work.sizes
    assert not embed.decode and costs[EmbedWork] == sum(map(len, embed.work.ids))
    assert infill.rows == infill.work.rows == len(infill.work.rows_plan) == 2
    assert infill.tokens == sum(len(layout.ids) for _, layout in infill.work.rows_plan)
    assert infill.new_tokens == 2 * 1 * 3  # rows x gaps x max_tokens
    # priced with the end's read of both candidates' whole texts (to keep the likelier)
    assert costs[InfillWork] == 2 * (infill.tokens + infill.new_tokens)


async def test_a_chat_is_tokenized_once_for_all_its_choices(tiny_chat_engine, tokenizer_calls):
    """The rendered prompt's ids that size the default max_tokens are the ids every choice decodes."""
    body = {"messages": [{"role": "user", "content": "Hello there"}], "n": 2, "max_tokens": 2}
    async with running_app(app_with(tiny_chat_engine)) as http:
        tokenizer_calls.clear()
        for stream in (False, True):
            response = await http.post("/v1/chat/completions", json={**body, "stream": stream})
            assert response.status_code == 200, response.text
        calls = list(tokenizer_calls)
    assert len(calls) == 2 and all(call.startswith("<|im_start|>user\nHello there") for call in calls), calls


async def test_ids_tokenized_earlier_are_still_checked_against_the_limit(tiny_chat_engine):
    """A chat's ids skip the second tokenization, not the rule: prompt plus max_tokens must fit."""
    body = {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 4000}
    async with running_app(app_with(tiny_chat_engine)) as http:
        assert_error(await http.post("/v1/chat/completions", json=body), 400, "context_length_exceeded", "lower max_tokens")
