"""Token ids as input on /v1/embeddings and /v1/completions, and embeddings requests of many inputs."""
from __future__ import annotations

import pytest

from magnet.server.testing import app_with, assert_error, running_app

TEXTS = ["Paris is the capital of France.", "A man plays the guitar."]


@pytest.fixture
async def client(tiny_engine):
    async with running_app(app_with(tiny_engine, max_client_batch_size=1500)) as http:
        yield http


def vectors(answer: dict) -> list[list[float]]:
    return [d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])]


async def test_embeddings_of_ids_equal_those_of_their_text(client, tiny_engine):
    ids = [tiny_engine.tokens(t) for t in TEXTS]
    from_text = vectors((await client.post("/v1/embeddings", json={"input": TEXTS})).json())
    from_ids = vectors((await client.post("/v1/embeddings", json={"input": ids})).json())
    one = vectors((await client.post("/v1/embeddings", json={"input": ids[1]})).json())
    assert from_ids == from_text and one == from_text[1:]


async def test_an_id_outside_the_vocabulary_is_a_400_naming_it(client, tiny_engine):
    vocabulary = len(tiny_engine.tokenizer)
    for body, where in (({"input": [5, vocabulary]}, "input[1]"), ({"input": [[5], [6, 7, 100_000]]}, "input[1][2]")):
        assert_error(await client.post("/v1/embeddings", json=body), 400, "invalid_input",
                     f"{where} is token id", "vocabulary", "check_embedding_ctx_length=False")
    assert_error(await client.post("/v1/completions", json={"prompt": [vocabulary + 1], "max_tokens": 2}),
                 400, "invalid_input", "prompt[0] is token id")
    assert_error(await client.post("/v1/embeddings", json={"input": [-3]}), 400, "invalid_input", ">= 0")


async def test_a_completion_of_ids_equals_that_of_their_text(client, tiny_engine):
    prompt = "The quick brown fox"
    body = {"max_tokens": 4, "temperature": 0}
    from_text = (await client.post("/v1/completions", json={"prompt": prompt, **body})).json()
    from_ids = (await client.post("/v1/completions", json={"prompt": tiny_engine.tokens(prompt), **body})).json()
    two = (await client.post("/v1/completions", json={"prompt": [tiny_engine.tokens(prompt)] * 2, **body})).json()
    assert from_ids["choices"][0]["text"] == from_text["choices"][0]["text"]
    assert [c["text"] for c in two["choices"]] == [from_text["choices"][0]["text"]] * 2


async def test_a_thousand_inputs_are_one_request_in_order(client, tiny_engine):
    texts = [f"{TEXTS[i % 2]} Number {i}." for i in range(1000)]  # LangChain's default chunk
    answer = (await client.post("/v1/embeddings", json={"input": texts})).json()
    assert [d["index"] for d in answer["data"]] == list(range(1000))
    expected = tiny_engine.embed([texts[0], texts[777]]).embeddings.tolist()
    for got, want in zip((answer["data"][0]["embedding"], answer["data"][777]["embedding"]), expected):
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5


async def test_over_the_client_batch_size_is_a_413_naming_the_limit(client):
    assert_error(await client.post("/v1/embeddings", json={"input": ["x"] * 1501}), 413, "payload_too_large",
                 "1501 inputs", "limit of 1500", "max_client_batch_size")
