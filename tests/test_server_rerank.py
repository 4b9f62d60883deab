"""POST /v1/rerank and /v2/rerank (Cohere/Jina, vLLM's shapes) on the tiny model."""
from __future__ import annotations

import json

import pytest

from magnet.server.testing import app_with, assert_error, running_app

QUERY = "A man is playing a guitar."
DOCUMENTS = ["Paris is the capital of France.", "A man plays the guitar.", "The quick brown fox jumps.",
             "She walked to the store."]


@pytest.fixture
async def client(tiny_engine):
    async with running_app(app_with(tiny_engine)) as http:
        yield http


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
async def test_results_are_paired_by_index_best_first(client, tiny_engine, path):
    answer = (await client.post(path, json={"model": "magnet", "query": QUERY, "documents": DOCUMENTS})).json()
    assert answer["model"] == tiny_engine.name and answer["id"].startswith("rerank-")
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 0
    results = answer["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    query, *documents = tiny_engine.embed([QUERY, *DOCUMENTS]).embeddings
    for result in results:
        assert result["document"] == {"text": DOCUMENTS[result["index"]]}
        assert abs(result["relevance_score"] - float(query @ documents[result["index"]])) < 1e-5
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)


async def test_top_n_return_documents_and_cohere_document_objects(client):
    whole = (await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})).json()["results"]
    objects = [{"text": d, "title": "ignored"} for d in DOCUMENTS]
    top = (await client.post("/v2/rerank", json={"query": QUERY, "documents": objects, "top_n": 2,
                                                  "return_documents": False})).json()["results"]
    assert top == [{"index": r["index"], "relevance_score": r["relevance_score"]} for r in whole[:2]]
    everything = (await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 0}))
    assert len(everything.json()["results"]) == 4


async def test_scores_equal_tei_rerank_and_v1_score(client):
    cohere = (await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})).json()["results"]
    tei = (await client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS})).json()
    assert [(r["index"], r["relevance_score"]) for r in cohere] == [(r["index"], r["score"]) for r in tei]


@pytest.mark.parametrize("body, status, words", [
    ({"query": QUERY, "documents": []}, 422, ["documents", "at least one"]),
    ({"query": QUERY, "documents": ["ok", "  "]}, 422, ["documents[1]", "empty"]),
    ({"query": " ", "documents": ["a"]}, 422, ["query", "empty"]),
    ({"query": QUERY, "documents": ["a"], "top_n": -1}, 422, ["top_n"]),
    ({"query": QUERY, "documents": [{"text": "\ud800"}]}, 422, ["documents[0]", "surrogate"]),
    ({"query": QUERY, "documents": ["a"], "model": "gpt-4o"}, 404, ["gpt-4o"]),
])
async def test_bad_rerank_requests_are_refused_naming_the_field(client, body, status, words):
    code = {422: "invalid_input", 404: "model_not_found"}[status]
    sent = json.dumps(body)  # ASCII: a lone surrogate travels as its \ud800 escape
    response = await client.post("/v1/rerank", content=sent, headers={"content-type": "application/json"})
    assert_error(response, status, code, *words)


async def test_more_documents_than_the_limit_is_a_413(tiny_engine):
    async with running_app(app_with(tiny_engine, max_client_batch_size=3)) as http:
        response = await http.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
    assert_error(response, 413, "payload_too_large", "documents has 4 inputs", "limit of 3")
