"""Every native route and its error paths, in-process (httpx ASGI) on the tiny random Llama."""
from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import pytest

from magnet.sampling import INFILL_DEFAULTS, SamplingParams
from magnet.server.app import create_app
from magnet.server.settings import Settings
from magnet.server.testing import app_with, assert_error, running_app

LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog."] * 60)  # > 256 tokens, the tiny limit


@pytest.fixture
async def client(tiny_engine):
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        yield http



# --- /v1/embed -------------------------------------------------------------------------


async def test_embed_matches_the_engine_and_is_normalized(client, tiny_engine):
    texts = ["A man is playing a guitar.", "Paris is the capital of France."]
    body = (await client.post("/v1/embed", json={"input": texts})).json()
    assert body["model"] == tiny_engine.name
    vectors = body["embeddings"]
    assert len(vectors) == 2 and len(vectors[0]) == tiny_engine.model.config.hidden_size
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
    expected = tiny_engine.embed(texts)
    for got, want in zip(vectors, expected.embeddings.tolist()):
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5
    assert body["usage"]["prompt_tokens"] == expected.prompt_tokens


async def test_concurrent_embed_requests_each_get_their_own_rows(client, tiny_engine):
    texts = ["one fox", "two dogs jump", "the capital of Germany", "a guitar"]
    answers = await asyncio.gather(*(client.post("/v1/embed", json={"input": t}) for t in texts))
    alone = tiny_engine.embed(texts).embeddings.tolist()
    for answer, want in zip(answers, alone):
        got = answer.json()["embeddings"]
        assert len(got) == 1 and max(abs(a - b) for a, b in zip(got[0], want)) < 1e-5


async def test_embed_without_normalize_is_not_unit_length(client):
    body = (await client.post("/v1/embed", json={"input": "a fox", "normalize": False})).json()
    assert not math.isclose(sum(x * x for x in body["embeddings"][0]), 1.0, rel_tol=1e-3)


async def test_too_long_input_is_422_naming_the_limit_unless_truncated(client, tiny_engine):
    refused = await client.post("/v1/embed", json={"input": ["short", LONG_TEXT]})
    assert_error(refused, 422, "input_too_long", str(tiny_engine.max_length), "truncate")
    cut = await client.post("/v1/embed", json={"input": LONG_TEXT, "truncate": True})
    assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == tiny_engine.max_length


@pytest.mark.parametrize("body, words", [
    ({"input": []}, ["at least one text"]),
    ({"input": ["fine", "  "]}, ["input[1]", "empty"]),
    ({"input": 5}, ["input"]),
    ({"input": "x", "normalize": "maybe"}, ["normalize"]),
    ({"input": "x", "colour": "red"}, ["colour", "Extra inputs"]),
    ({}, ["input", "required"]),
    ({"input": ["x"] * 257}, ["at most 256"]),
])
async def test_bad_embed_bodies_are_422_saying_what_to_change(client, body, words):
    assert_error(await client.post("/v1/embed", json=body), 422, "invalid_input", *words)


async def test_a_body_that_is_not_json_is_422(client):
    response = await client.post("/v1/embed", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_input", "not valid JSON")


# --- /v1/infill ------------------------------------------------------------------------


async def test_infill_prefix_suffix_matches_the_engine(client, tiny_engine):
    request = {"prefix": "The quick brown ", "suffix": " over the lazy dog.", "max_tokens": 6}
    body = (await client.post("/v1/infill", json=request)).json()
    # the route's defaults are INFILL_DEFAULTS (a penalty against loops)
    want = tiny_engine.infill(["The quick brown ", " over the lazy dog."], replace(INFILL_DEFAULTS, max_tokens=6))
    assert body["text"] == want.text and body["fills"] == [want.text]
    assert body["finish_reason"] == want.finish_reason
    assert body["usage"] == {"prompt_tokens": want.prompt_tokens, "completion_tokens": want.completion_tokens,
                             "total_tokens": want.prompt_tokens + want.completion_tokens}
    assert 1 <= body["usage"]["completion_tokens"] <= 6


async def test_infill_segments_fill_every_gap(client):
    body = (await client.post("/v1/infill", json={"segments": ["A man ", " a guitar ", " the stage."],
                                                   "max_tokens": 4})).json()
    assert len(body["fills"]) == 2 and len(body["finish_reasons"]) == 2 and body["text"] == body["fills"][0]


@pytest.mark.parametrize("body, words", [
    ({"prefix": "a", "segments": ["a", "b"]}, ["not both"]),
    ({"segments": ["only one"]}, ["at least two"]),
    ({"max_tokens": 3}, ["prefix", "segments"]),
    ({"prefix": " ", "suffix": ""}, ["context is empty"]),
    ({"segments": ["The ", " ", " sat on the mat."]}, ["segments[1] is empty", "touch"]),
    ({"segments": ["The ", "", " sat.", ""]}, ["segments[1] is empty"]),
    ({"prefix": "a", "suffix": "b", "temperature": -1}, ["temperature"]),
    ({"prefix": "a", "suffix": "b", "top_p": 0}, ["top_p"]),
    ({"prefix": "a", "suffix": "b", "max_tokens": 5000}, ["max_tokens", "4096"]),
    ({"prefix": "a", "suffix": "b", "stop": [""]}, ["stop"]),
    ({"prefix": "a", "suffix": "b", "seed": -3}, ["seed"]),
])
async def test_bad_infill_bodies_are_422(client, body, words):
    assert_error(await client.post("/v1/infill", json=body), 422, "invalid_input", *words)


async def test_infill_over_the_context_is_422_naming_the_limit(client, tiny_engine):
    response = await client.post("/v1/infill", json={"prefix": "a", "suffix": "b", "max_tokens": 4000})
    assert_error(response, 422, "input_too_long", str(tiny_engine.max_length), "max_tokens")


# --- /v1/generate ----------------------------------------------------------------------


async def test_generate_matches_the_engines_greedy_output(client, tiny_engine):
    body = (await client.post("/v1/generate", json={"prompt": "The quick brown", "max_tokens": 8})).json()
    want = tiny_engine.generate("The quick brown", SamplingParams(max_tokens=8))
    assert (body["text"], body["finish_reason"]) == (want.text, want.finish_reason)
    assert body["usage"]["completion_tokens"] == want.completion_tokens


async def test_generate_stream_sends_events_that_add_up_to_the_text(client):
    request = {"prompt": "The quick brown", "max_tokens": 8}
    whole = (await client.post("/v1/generate", json=request)).json()
    async with client.stream("POST", "/v1/generate", json={**request, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    from magnet.protocol import GenerateChunk

    chunks = [GenerateChunk.model_validate_json(line[6:]) for line in lines[:-1]]
    assert "".join(c.text for c in chunks) == whole["text"]
    assert chunks[-1].finish_reason == whole["finish_reason"] and chunks[-1].usage.completion_tokens >= 1
    assert all(c.finish_reason is None for c in chunks[:-1])


async def test_generate_stream_with_bad_input_is_a_plain_422(client, tiny_engine):
    response = await client.post("/v1/generate", json={"prompt": "x", "max_tokens": 4000, "stream": True})
    assert_error(response, 422, "input_too_long", str(tiny_engine.max_length))


@pytest.mark.parametrize("body, words", [
    ({"prompt": ""}, ["prompt"]),
    ({"prompt": " \n\t"}, ["prompt is empty", "non-blank"]),  # the schema's pattern, as /v1/completions
    ({"prompt": 3}, ["prompt"]),
    ({"prompt": "x", "max_tokens": 0}, ["max_tokens"]),
    ({"prompt": "x", "temperature": 9}, ["temperature"]),
    ({"prompt": "x", "stream": "yes please"}, ["stream"]),
])
async def test_bad_generate_bodies_are_422(client, body, words):
    assert_error(await client.post("/v1/generate", json=body), 422, "invalid_input", *words)


# --- /v1/tag without heads, probes, unknown routes --------------------------------------


async def test_tag_without_heads_says_how_to_load_them(client):
    response = await client.post("/v1/tag", json={"input": "Peter lives in Berlin.", "task": "ner"})
    assert_error(response, 422, "unknown_task", "no tagging heads", "--heads")


async def test_health_reports_model_and_backends(client, tiny_engine):
    for path in ("/health", "/ready"):
        body = (await client.get(path)).json()
        assert body["ready"] is True and body["model"] == tiny_engine.name
        assert body["backends"] == {"embed": "torch", "tag": None, "infill": "torch", "generate": "torch"}


async def test_unknown_route_and_method_are_json_errors(client):
    assert_error(await client.get("/v1/nothing"), 404, "not_found")
    assert_error(await client.get("/v1/embed"), 405, "method_not_allowed")


async def test_openapi_lists_the_routes(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/v1/embed", "/v1/tag", "/v1/infill", "/v1/generate", "/v1/embeddings", "/v1/completions",
            "/v1/models", "/health", "/ready", "/metrics"} <= set(paths)


async def test_not_ready_until_loaded_then_503_with_the_reason(tmp_path):
    app = create_app(Settings(model=str(tmp_path / "missing"), generate_backend="torch", heads="none"))
    service = app.state.service
    import httpx

    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as http:
            while service.load_error is None:
                await asyncio.sleep(0.01)
            health = await http.get("/health")
            assert health.status_code == 200 and health.json()["ready"] is False
            assert_error(await http.get("/ready"), 503, "not_ready", "config.json")
            assert_error(await http.post("/v1/embed", json={"input": "x"}), 503, "not_ready", "failed to load")


async def test_with_an_api_key_the_open_probes_name_a_load_failure_without_its_paths(tmp_path):
    import httpx

    missing = tmp_path / "secret-project" / "ckpt"
    app = create_app(Settings(model=str(missing), generate_backend="torch", heads="none", api_key="k"))
    service = app.state.service
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as http:
            while service.load_error is None:
                await asyncio.sleep(0.01)
            health, ready = (await http.get("/health")).text, (await http.get("/ready")).text
    kind = service.load_error.split(":")[0]  # the error's class, which the probes still name
    assert f"failed to load ({kind})" in ready and f"failed: {kind}" in health
    assert "secret-project" not in ready + health and "secret-project" in service.load_error
