"""Model ids (/v1/models/{id}, `model` checks), /tokenize, /detokenize and /v1/score on the tiny model."""
from __future__ import annotations

import pytest
from openai import NotFoundError, OpenAI

from magnet.server.model_ids import MODEL_ALIAS
from magnet.server.testing import app_with, assert_error, running_app, serve_on_loopback

QUERY = "A man is playing a guitar."
TEXTS = ["Paris is the capital of France.", "A man plays the guitar.", "The quick brown fox jumps."]



@pytest.fixture
async def client(tiny_engine):
    async with running_app(app_with(tiny_engine)) as http:
        yield http


@pytest.fixture(scope="module")
def sdk(tiny_engine):
    with serve_on_loopback(app_with(tiny_engine)) as base_url:
        with OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
            yield client



# --- model ids ---------------------------------------------------------------------------


def test_models_retrieve_answers_to_the_name_and_the_alias(sdk, tiny_engine):
    [listed] = sdk.models.list().data
    assert listed.id == tiny_engine.name and listed.model_extra["aliases"] == [MODEL_ALIAS]
    assert sdk.models.retrieve(tiny_engine.name).id == tiny_engine.name
    assert sdk.models.retrieve(MODEL_ALIAS).id == tiny_engine.name


def test_an_unknown_model_id_is_404_naming_the_known_ones(sdk, tiny_engine):
    for call in (lambda: sdk.models.retrieve("gpt-4o"),
                 lambda: sdk.embeddings.create(model="gpt-4o", input="hi"),
                 lambda: sdk.completions.create(model="gpt-4o", prompt="hi", max_tokens=2)):
        with pytest.raises(NotFoundError) as raised:
            call()
        assert raised.value.body["code"] == "model_not_found"
        assert tiny_engine.name in raised.value.body["message"] and f"'{MODEL_ALIAS}'" in raised.value.body["message"]


async def test_a_missing_model_is_accepted(client):
    assert (await client.post("/v1/embeddings", json={"input": "hi"})).status_code == 200
    answer = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 2


# --- /tokenize and /detokenize --------------------------------------------------------------


async def test_tokenize_gives_the_ids_count_and_limit(client, tiny_engine):
    text = "The quick brown fox"
    body = (await client.post("/tokenize", json={"prompt": text, "add_special_tokens": False})).json()
    assert body == {"tokens": tiny_engine.tokens(text), "count": len(tiny_engine.tokens(text)),
                    "max_model_len": tiny_engine.max_length}
    with_strs = (await client.post("/tokenize", json={"prompt": text, "return_token_strs": True,
                                                      "model": MODEL_ALIAS})).json()
    assert with_strs["token_strs"] == tiny_engine.tokenizer.convert_ids_to_tokens(with_strs["tokens"])


async def test_detokenize_inverts_tokenize(client, tiny_engine):
    text = "Paris is the capital of France."
    ids = (await client.post("/tokenize", json={"prompt": text})).json()["tokens"]
    assert (await client.post("/detokenize", json={"tokens": ids})).json() == {"prompt": text}


async def test_out_of_vocabulary_ids_are_422(client, tiny_engine):
    size = len(tiny_engine.tokenizer)
    response = await client.post("/detokenize", json={"tokens": [5, size, -1]})
    assert_error(response, 422, "invalid_input", f"tokens[1] = {size}", "tokens[2] = -1", f"0 to {size - 1}")
    assert_error(await client.post("/detokenize", json={"tokens": [1.5]}), 422, "invalid_input", "tokens")
    assert_error(await client.post("/tokenize", json={"prompt": "x", "model": "other"}), 404, "model_not_found")


# --- /v1/score ------------------------------------------------------------------------------


async def test_score_is_the_cosine_of_the_embeddings_best_first(client, tiny_engine):
    vectors = tiny_engine.embed([QUERY, *TEXTS]).embeddings
    want = (vectors[1:] @ vectors[0]).tolist()
    ranked = (await client.post("/v1/score", json={"query": QUERY, "texts": TEXTS})).json()
    assert [r["index"] for r in ranked] == sorted(range(len(TEXTS)), key=lambda i: -want[i])
    assert all(abs(r["score"] - want[r["index"]]) < 1e-5 for r in ranked)
    assert all("text" not in r for r in ranked)
    with_text = (await client.post("/v1/score", json={"query": QUERY, "texts": TEXTS, "return_text": True})).json()
    assert [r["text"] for r in with_text] == [TEXTS[r["index"]] for r in with_text]


async def test_score_goes_through_the_batched_embed(tiny_engine, monkeypatch):
    app = app_with(tiny_engine)
    service = app.state.service
    calls = []
    original = service.embed

    async def counted(texts, *args, **kwargs):
        calls.append(list(texts))
        return await original(texts, *args, **kwargs)

    monkeypatch.setattr(service, "embed", counted)
    async with running_app(app) as http:
        assert (await http.post("/v1/score", json={"query": QUERY, "texts": TEXTS})).status_code == 200
    assert calls == [[QUERY, *TEXTS]]


@pytest.mark.parametrize("body, words", [
    ({"query": " ", "texts": ["a"]}, ["query", "empty"]),
    ({"query": "q", "texts": []}, ["texts", "at least one"]),
    ({"query": "q", "texts": ["a"] * 257}, ["texts", "256"]),
    ({"query": "q", "texts": ["a"], "truncation_direction": "left"}, ["truncation_direction"]),
])
async def test_bad_score_requests_are_422(client, body, words):
    assert_error(await client.post("/v1/score", json=body), 422, "invalid_input", *words)


# --- the API key covers them ------------------------------------------------------------------


async def test_utility_routes_need_the_api_key_when_one_is_set(tiny_engine):
    async with running_app(app_with(tiny_engine, api_key="k")) as http:
        for path, body in (("/tokenize", {"prompt": "x"}), ("/detokenize", {"tokens": [1]}),
                           ("/v1/score", {"query": "q", "texts": ["a"]})):
            assert (await http.post(path, json=body)).status_code == 401, path
            assert (await http.post(path, json=body, headers={"Authorization": "Bearer k"})).status_code == 200, path
        assert (await http.get(f"/v1/models/{MODEL_ALIAS}")).status_code == 401
