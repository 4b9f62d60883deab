"""Hostile inputs on every route: always a 4xx naming the field, or a 200; never a 5xx."""
from __future__ import annotations

import json

import pytest

from magnet.server.testing import app_with, running_app

SURROGATE = "a\ud800b"  # JSON "a\\ud800b": a lone surrogate, which no tokenizer encodes


@pytest.fixture
async def client(tiny_engine):
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        yield http


async def post_raw(client, path: str, body) -> object:
    """json.dumps with ensure_ascii keeps lone surrogates as \\u escapes, as a hostile client sends."""
    return await client.post(path, content=json.dumps(body, ensure_ascii=True, allow_nan=True),
                             headers={"content-type": "application/json"})


SURROGATE_BODIES = [
    ("/v1/embed", {"input": [SURROGATE]}, "input[0]"),
    ("/v1/embed", {"input": "ok", "instruction": SURROGATE}, "instruction"),
    ("/v1/embeddings", {"input": SURROGATE, "model": "m"}, "input"),
    ("/v1/tag", {"input": SURROGATE}, "input"),
    ("/v1/tag", {"words": [["ok", SURROGATE]]}, "words[0][1]"),
    ("/v1/infill", {"prefix": SURROGATE, "suffix": "b"}, "prefix"),
    ("/v1/infill", {"segments": ["a", "b", SURROGATE]}, "segments[2]"),
    ("/v1/infill", {"prefix": "a", "suffix": "b", "stop": [SURROGATE]}, "stop[0]"),
    ("/v1/generate", {"prompt": SURROGATE}, "prompt"),
    ("/v1/completions", {"prompt": "a", "suffix": SURROGATE, "model": "m"}, "suffix"),
]


OPENAI_PATHS = ("/v1/embeddings", "/v1/completions", "/v1/chat/completions")  # bad input: 400, as OpenAI's


def refused(path: str) -> int:
    return 400 if path in OPENAI_PATHS else 422


@pytest.mark.parametrize("path, body, where", SURROGATE_BODIES)
async def test_a_lone_surrogate_is_refused_naming_the_field(client, path, body, where):
    response = await post_raw(client, path, body)
    assert response.status_code == refused(path), response.text
    assert where in response.json()["error"]["message"]


@pytest.mark.parametrize("path, body, field", [
    ("/v1/generate", {"prompt": "a", "seed": 2**64}, "seed"),
    ("/v1/infill", {"prefix": "a", "suffix": "b", "seed": 2**70}, "seed"),
    ("/v1/completions", {"prompt": "a", "seed": 2**64, "model": "m"}, "seed"),
    ("/v1/generate", {"prompt": "a", "max_tokens": 10**30}, "max_tokens"),
    ("/v1/generate", {"prompt": "a", "temperature": float("nan")}, "temperature"),
    ("/v1/infill", {"prefix": "a", "suffix": "b", "top_p": float("inf")}, "top_p"),
    ("/v1/infill", {"prefix": "a", "suffix": "b", "repetition_penalty": float("nan")}, "repetition_penalty"),
    ("/v1/generate", {"prompt": "a", "frequency_penalty": 3}, "frequency_penalty"),
    ("/v1/generate", {"prompt": "a", "top_k": -2}, "top_k"),
    ("/v1/completions", {"prompt": "a", "logit_bias": {"50": 10}, "model": "m"}, "logit_bias"),
    ("/v1/completions", {"prompt": "a", "best_of": 3, "model": "m"}, "best_of"),
    ("/v1/infill", {"prefix": "a", "suffix": "b", "best_of": 99}, "best_of"),
])
async def test_out_of_range_numbers_are_refused_naming_the_field(client, path, body, field):
    response = await post_raw(client, path, body)
    assert response.status_code == refused(path), response.text
    assert field in response.json()["error"]["message"]


@pytest.mark.parametrize("path, body", [
    ("/v1/infill", {"prefix": "a", "suffix": "b", "temperature": 1.0, "top_p": 1e-300, "max_tokens": 3}),
    ("/v1/generate", {"prompt": "a", "temperature": 1e-30, "max_tokens": 3}),
    ("/v1/embed", {"input": ["zero\u200bwidth", "\u202eright to left\u202c", "emoji \U0001F600"]}),
    ("/v1/generate", {"prompt": "a", "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.3,
                      "presence_penalty": -2, "frequency_penalty": 2, "temperature": 1.0, "seed": 2**63 - 1,
                      "max_tokens": 3}),
    ("/v1/infill", {"prefix": "a", "suffix": "b", "best_of": 4, "max_tokens": 3}),
    ("/v1/completions", {"prompt": "a", "suffix": "b", "best_of": 2, "max_tokens": 3, "model": "magnet"}),
])
async def test_odd_but_valid_input_is_served(client, path, body):
    response = await post_raw(client, path, body)
    assert response.status_code == 200, response.text


async def test_deep_json_and_many_inputs_are_4xx(client):
    deep = "[" * 5000 + "]" * 5000
    response = await client.post("/v1/embed", content='{"input": ' + deep + "}",
                                 headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    response = await post_raw(client, "/v1/embed", {"input": ["x"] * 10_000})
    assert response.status_code in (413, 422) and "error" in response.json()


async def test_invalid_utf8_is_a_422_saying_so(client):
    response = await client.post("/v1/embed", content=b'{"input": "\xff\xfe"}',
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "UTF-8" in response.json()["error"]["message"]


@pytest.mark.parametrize("body, field", [
    ({"prompt": "a", "stream": 0}, "stream"),
    ({"input": "a", "normalize": "yes"}, "normalize"),
])
async def test_booleans_are_not_coerced(client, body, field):
    path = "/v1/generate" if "prompt" in body else "/v1/embed"
    response = await post_raw(client, path, body)
    assert response.status_code == 422 and field in response.json()["error"]["message"]
