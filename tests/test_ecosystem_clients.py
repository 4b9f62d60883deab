"""The ecosystem's embedding and rerank clients, installed from PyPI (the dev extra), against a
live server on loopback (the tiny model): each gets what it expects, paired right, with the
engine's own numbers.

TEI dialect: huggingface_hub's InferenceClient, LangChain's HuggingFaceEndpointEmbeddings,
LlamaIndex's TextEmbeddingsInference and its TEI rerank, Haystack's HuggingFaceAPITextEmbedder and
HuggingFaceTEIRanker. OpenAI dialect: the openai SDK (base64 by default) and LangChain's
OpenAIEmbeddings.
"""
from __future__ import annotations

import os

import httpx
import numpy as np
import pytest

from magnet.server.testing import app_with, serve_on_loopback

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network from the tests

TEXTS = ["Paris is the capital of France.", "A man plays the guitar.", "The quick brown fox jumps.",
         "She walked to the store."]
QUERY = "A man is playing a guitar."
TOL = 1e-5


pytestmark = pytest.mark.usefixtures("hub_client_may_reach_loopback")


@pytest.fixture(scope="module")
def base_url(tiny_engine):
    with serve_on_loopback(app_with(tiny_engine)) as url:
        yield url


@pytest.fixture(scope="module")
def expected(tiny_engine) -> np.ndarray:
    """(N, H) the engine's own normalized embeddings of TEXTS."""
    return tiny_engine.embed(TEXTS).embeddings.numpy()


@pytest.fixture(scope="module")
def cosines(tiny_engine) -> dict[str, float]:
    """Each text's cosine with QUERY, computed by the engine."""
    query, *texts = tiny_engine.embed([QUERY, *TEXTS]).embeddings
    return {text: float(query @ vector) for text, vector in zip(TEXTS, texts)}


def assert_rows(got, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < TOL


# --- TEI dialect ----------------------------------------------------------------------------------


def test_huggingface_hub_inference_client(base_url, expected):
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=base_url)
    assert_rows(client.feature_extraction(TEXTS), expected)
    assert_rows(client.feature_extraction(TEXTS[1]), expected[1:2])  # one text: one row
    assert_rows(client.feature_extraction(TEXTS[:2], normalize=True, truncate=True,
                                          truncation_direction="left"), expected[:2])


def test_langchain_huggingface_endpoint_embeddings(base_url, expected):
    from huggingface_hub import AsyncInferenceClient, InferenceClient
    from langchain_huggingface import HuggingFaceEndpointEmbeddings

    # langchain-huggingface 1.2 refuses a URL as `model`: it is given clients pointed at the server
    embeddings = HuggingFaceEndpointEmbeddings(model="magnet")
    embeddings.client, embeddings.async_client = InferenceClient(model=base_url), AsyncInferenceClient(model=base_url)
    assert_rows(embeddings.embed_documents(TEXTS), expected)
    assert_rows([embeddings.embed_query(TEXTS[2])], expected[2:3])


def test_llama_index_tei_embedding(base_url, expected):
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    model = TextEmbeddingsInference(base_url=base_url, model_name="magnet", embed_batch_size=3)
    assert_rows(model.get_text_embedding_batch(TEXTS), expected)  # two requests: 3 + 1
    assert_rows([model.get_query_embedding(TEXTS[0])], expected[:1])


def test_llama_index_tei_rerank_gets_the_best_scores(base_url, cosines):
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    reranker = TextEmbeddingInference(base_url=base_url, top_n=2)
    nodes = reranker.postprocess_nodes([NodeWithScore(node=TextNode(text=t)) for t in TEXTS], query_str=QUERY)
    best = sorted(cosines.values(), reverse=True)[:2]
    assert len(nodes) == 2 and np.allclose([n.score for n in nodes], best, atol=TOL)
    # This version pairs the scores with its nodes by position, not by TEI's `index` (it does so
    # against TEI too): the texts it keeps are not always those the scores belong to. docs/service.md
    # says so and points to the rankers that read `index`.


def test_haystack_tei_text_embedder(base_url, expected, tiny_engine):
    from haystack_integrations.components.embedders.huggingface_api import HuggingFaceAPITextEmbedder

    api = {"api_type": "text_embeddings_inference", "api_params": {"url": base_url}}
    raw = HuggingFaceAPITextEmbedder(**api).run(text=TEXTS[3])["embedding"]  # it sends normalize=false
    assert_rows([raw], tiny_engine.embed(TEXTS[3:], normalize=False).embeddings.numpy())
    unit = HuggingFaceAPITextEmbedder(**api, normalize=True).run(text=TEXTS[3])["embedding"]
    assert_rows([unit], expected[3:4])


def test_haystack_tei_ranker_pairs_scores_by_index(base_url, cosines):
    from haystack import Document
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker

    ranker = HuggingFaceTEIRanker(url=base_url, top_k=3)
    ranked = ranker.run(query=QUERY, documents=[Document(content=t) for t in TEXTS])["documents"]
    assert len(ranked) == 3
    assert [d.content for d in ranked] == sorted(cosines, key=cosines.get, reverse=True)[:3]
    for document in ranked:
        assert abs(document.score - cosines[document.content]) < TOL


# --- OpenAI dialect -------------------------------------------------------------------------------


def test_openai_sdk_embeddings_default_base64(base_url, expected, tiny_engine):
    from openai import OpenAI

    with OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
        answer = client.embeddings.create(model="magnet", input=TEXTS)  # encoding_format: base64, decoded
        assert_rows([d.embedding for d in answer.data], expected)
        ids = [tiny_engine.tokens(t) for t in TEXTS]  # token-id input, this model's ids
        assert_rows([d.embedding for d in client.embeddings.create(model="magnet", input=ids).data], expected)


def test_langchain_openai_embeddings_without_tiktoken(base_url, expected):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model="magnet", base_url=f"{base_url}/v1", api_key="unused",
                                  check_embedding_ctx_length=False)  # send text, not tiktoken ids
    assert_rows(embeddings.embed_documents(TEXTS), expected)
    assert_rows([embeddings.embed_query(TEXTS[0])], expected[:1])


def test_langchain_sends_its_1000_text_chunks_as_single_requests(base_url, tiny_engine):
    from langchain_openai import OpenAIEmbeddings

    texts = [f"Text number {i}." for i in range(1200)]  # chunk_size 1000: two requests, each within
    # max_request_tokens (the tiny tokenizer spends about a token per character)
    embeddings = OpenAIEmbeddings(model="magnet", base_url=f"{base_url}/v1", api_key="unused",
                                  check_embedding_ctx_length=False)
    rows = embeddings.embed_documents(texts)
    assert len(rows) == 1200
    assert_rows([rows[0], rows[999], rows[1000], rows[1199]],
                tiny_engine.embed([texts[0], texts[999], texts[1000], texts[1199]]).embeddings.numpy())


# --- the real model -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_model_ranks_the_relevant_document_first_through_the_clients():
    from haystack import Document
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker
    from huggingface_hub import InferenceClient

    from magnet.engine import Engine
    from magnet.loading import ModelSpec

    engine = Engine.from_spec(ModelSpec(device="cpu"))  # SmolLM2-135M with the shipped adapter
    documents = ["The stock market fell sharply today.", "Someone is playing a guitar.", "It is raining in Paris."]
    with serve_on_loopback(app_with(engine)) as url:
        top = HuggingFaceTEIRanker(url=url, top_k=1).run(query=QUERY, documents=[Document(content=d) for d in documents])
        assert [d.content for d in top["documents"]] == [documents[1]]
        results = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": documents}).json()["results"]
        assert results[0]["index"] == 1
        vectors = InferenceClient(model=url).feature_extraction(documents)
        assert_rows(vectors, engine.embed(documents).embeddings.numpy())
