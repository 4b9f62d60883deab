"""Vectors leave as orjson writes them from the float32 array: the same values as the engine's,
in the response model's shape, or as base64 float32 on /v1/embed as on /v1/embeddings."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from magnet.protocol import EmbedResponse
from magnet.server.openai_models import EmbeddingsResponse
from magnet.server.testing import app_with, running_app

TEXTS = ["A man is playing a guitar.", "Paris is the capital of France.", "a fox"]


@pytest.fixture
async def http(tiny_engine):
    async with running_app(app_with(tiny_engine)) as client:
        yield client


def from_base64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


async def test_embed_vectors_are_the_engines_float32_values_in_the_response_shape(http, tiny_engine):
    response = await http.post("/v1/embed", json={"input": TEXTS})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = EmbedResponse.model_validate_json(response.content)
    assert list(response.json()) == list(EmbedResponse.model_fields)  # the model's fields, in order
    want = tiny_engine.embed(TEXTS).embeddings.numpy()
    assert np.array_equal(np.asarray(body.embeddings, dtype=np.float32), want)  # float32 round trip: exact
    assert body.usage.prompt_tokens == tiny_engine.embed(TEXTS).prompt_tokens


async def test_embed_base64_is_the_little_endian_float32_of_the_same_vectors(http):
    floats = (await http.post("/v1/embed", json={"input": TEXTS})).json()["embeddings"]
    packed = (await http.post("/v1/embed", json={"input": TEXTS, "encoding_format": "base64"})).json()
    assert np.array_equal(np.stack([from_base64(v) for v in packed["embeddings"]]), np.asarray(floats, np.float32))
    assert (await http.post("/v1/embed", json={"input": "x", "encoding_format": "hex"})).status_code == 422


async def test_openai_embeddings_carry_the_same_vectors_as_float_and_base64(http):
    floats = (await http.post("/v1/embeddings", json={"input": TEXTS})).json()
    EmbeddingsResponse.model_validate(floats)
    packed = (await http.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"})).json()
    assert [d["index"] for d in floats["data"]] == [0, 1, 2] and floats["data"][0]["object"] == "embedding"
    assert np.array_equal(np.stack([from_base64(d["embedding"]) for d in packed["data"]]),
                          np.asarray([d["embedding"] for d in floats["data"]], np.float32))


async def test_the_client_encodes_through_base64_and_embed_passes_the_format_on(tiny_engine):
    import httpx

    from magnet.client import AsyncMagnetClient

    app = app_with(tiny_engine)
    sent = []
    async with running_app(app):
        transport = httpx.ASGITransport(app=app)

        async def record(request):
            sent.append(request.content)

        async with AsyncMagnetClient("http://magnet", transport=transport) as magnet:
            magnet.http.event_hooks = {"request": [record], "response": []}
            vectors = await magnet.encode(TEXTS, batch_size=2)
            packed = await magnet.embed(TEXTS[:1], encoding_format="base64")
            floats = await magnet.encode(TEXTS[:1], convert_to_numpy=False)
    assert vectors.dtype == np.float32 and np.array_equal(vectors, tiny_engine.embed(TEXTS).embeddings.numpy())
    assert all(b'"encoding_format":"base64"' in body for body in sent[:2])  # encode's two batches
    assert np.array_equal(from_base64(packed.embeddings[0]), vectors[0])
    assert np.array_equal(np.asarray(floats, np.float32)[0], vectors[0])
