"""encode() (sentence-transformers' names) on both clients, and MagnetEncoder (MTEB), on the tiny model."""
from __future__ import annotations

import asyncio
import json
import sys

import httpx
import numpy as np
import pytest

from magnet.client import AsyncMagnetClient, InputTooLongError, InvalidInputError, MagnetClient, MagnetEncoder, Retry
from magnet.client.encode import ASYNC_CONCURRENCY
from magnet.protocol import MAX_INPUTS
from magnet.server.testing import app_with, running_app, serve_on_loopback

TEXTS = [f"Sentence number {i} is about a {['fox', 'dog', 'guitar', 'city'][i % 4]}." for i in range(70)]
LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog."] * 60)  # over the tiny 256-token limit



class CountingTransport(httpx.HTTPTransport):
    """Counts the requests that reach the network."""

    def __init__(self):
        super().__init__()
        self.sent: list[int] = []  # texts per request

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(len(json.loads(request.content)["input"]))
        return super().handle_request(request)


@pytest.fixture(scope="module")
def base_url(tiny_engine):
    with serve_on_loopback(app_with(tiny_engine)) as url:
        yield url


@pytest.fixture
def counted(base_url):
    transport = CountingTransport()
    with MagnetClient(base_url, retry=Retry(attempts=0), transport=transport) as client:
        yield client, transport


def engine_rows(engine, texts, **kwargs) -> np.ndarray:
    return engine.embed(texts, **kwargs).embeddings.numpy()


def test_any_number_of_texts_in_batches_in_order(counted, tiny_engine):
    client, transport = counted
    vectors = client.encode(TEXTS, batch_size=32)
    assert transport.sent == [32, 32, 6]
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
    assert vectors.shape == (70, tiny_engine.model.config.hidden_size)
    np.testing.assert_allclose(vectors, engine_rows(tiny_engine, TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batch_size_is_capped_at_the_server_limit(counted):
    client, transport = counted
    texts = (TEXTS * 5)[: MAX_INPUTS + 10]
    assert client.encode(texts, batch_size=10_000).shape[0] == MAX_INPUTS + 10
    assert transport.sent == [MAX_INPUTS, 10]


def test_a_str_gives_one_vector_and_lists_without_numpy(counted, tiny_engine):
    client, _ = counted
    one = client.encode(TEXTS[0])
    assert one.shape == (tiny_engine.model.config.hidden_size,)
    plain = client.encode(TEXTS[:3], convert_to_numpy=False, normalize_embeddings=False, instruction="Embed: ")
    want = engine_rows(tiny_engine, TEXTS[:3], instruction="Embed: ", normalize=False)
    assert isinstance(plain, list) and all(isinstance(row, list) for row in plain)
    np.testing.assert_allclose(np.array(plain), want, atol=1e-5)
    assert isinstance(client.encode(TEXTS[0], convert_to_numpy=False)[0], float)


def test_without_numpy_convert_to_numpy_says_what_to_do_before_sending(counted, monkeypatch):
    client, transport = counted
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now raises ImportError
    with pytest.raises(ImportError, match="pip install numpy.*convert_to_numpy=False"):
        client.encode(TEXTS)
    assert transport.sent == []
    assert len(client.encode(TEXTS[:2], convert_to_numpy=False)) == 2


def test_a_bad_text_is_named_by_its_place_before_anything_is_sent(counted):
    client, transport = counted
    with pytest.raises(InvalidInputError, match=r"sentences\[40\] is empty"):
        client.encode(TEXTS[:40] + ["  "] + TEXTS[40:])
    with pytest.raises(ValueError, match="batch_size"):
        client.encode(TEXTS, batch_size=0)
    assert transport.sent == []


def test_progress_bar_with_and_without_tqdm(counted, capsys, monkeypatch):
    client, _ = counted
    client.encode(TEXTS[:5], show_progress_bar=True)
    assert "5/5" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tqdm", None)
    client.encode(TEXTS[:5], batch_size=2, show_progress_bar=True)
    assert "encode: 5/5 texts" in capsys.readouterr().err
    client.encode(TEXTS[:5])
    assert capsys.readouterr().err == ""


def test_mteb_encoder_protocol(base_url, tiny_engine):
    with MagnetClient(base_url) as client:
        encoder = MagnetEncoder(client, batch_size=4)
        vectors = encoder.encode(TEXTS[:9] + [LONG_TEXT], task_name="STSBenchmark", prompt_type=None,
                                 show_progress_bar=False)  # MTEB's keywords are accepted
        assert isinstance(vectors, np.ndarray) and vectors.shape == (10, tiny_engine.model.config.hidden_size)
        np.testing.assert_allclose(vectors[:9], engine_rows(tiny_engine, TEXTS[:9]), atol=1e-5)
        np.testing.assert_allclose(vectors[9], engine_rows(tiny_engine, [LONG_TEXT], truncate=True)[0], atol=1e-5)
        with pytest.raises(InputTooLongError):  # the plain client keeps the server's default: no cutting
            client.encode([LONG_TEXT])


class InFlight(httpx.ASGITransport):
    """ASGI transport that records how many requests were in flight at once."""

    def __init__(self, app):
        super().__init__(app=app)
        self.now = self.most = 0

    async def handle_async_request(self, request):
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await super().handle_async_request(request)
        finally:
            self.now -= 1


async def test_async_encode_sends_batches_concurrently_but_bounded(tiny_engine):
    app = app_with(tiny_engine)
    async with running_app(app):
        transport = InFlight(app)
        async with AsyncMagnetClient("http://magnet", transport=transport) as client:
            vectors = await client.encode(TEXTS, batch_size=5)  # 14 batches
            assert transport.most == ASYNC_CONCURRENCY
            np.testing.assert_allclose(vectors, engine_rows(tiny_engine, TEXTS), atol=1e-5)
            assert (await client.encode(TEXTS[3])).shape == (tiny_engine.model.config.hidden_size,)
            with pytest.raises(InputTooLongError):
                await client.encode(TEXTS[:10] + [LONG_TEXT], batch_size=2)
            await asyncio.sleep(0)
            assert transport.now == 0  # the failed call left no batch running
