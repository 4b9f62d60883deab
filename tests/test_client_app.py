"""The typed clients against the real app: async in-process (ASGI), sync on a loopback port."""
from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from magnet.client import (
    AsyncMagnetClient,
    InputTooLongError,
    MagnetClient,
    Retry,
    UnauthorizedError,
    UnknownTaskError,
)
from magnet.protocol import EmbedResponse, InfillResponse
from magnet.sampling import INFILL_DEFAULTS, SamplingParams
from magnet.server.testing import app_with, running_app, serve_on_loopback

LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog."] * 60)



@pytest.fixture
async def client(tiny_engine):
    app = app_with(tiny_engine, api_key="k")
    async with running_app(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncMagnetClient("http://magnet", api_key="k", transport=transport) as magnet:
            yield magnet


async def test_async_client_covers_every_method(client, tiny_engine):
    embedded = await client.embed(["a fox", "a dog"])
    assert isinstance(embedded, EmbedResponse) and len(embedded.embeddings) == 2
    params = replace(INFILL_DEFAULTS, max_tokens=5)
    fill = await client.infill("The quick ", " the lazy dog.", max_tokens=5)
    assert fill == tiny_engine.infill(["The quick ", " the lazy dog."], params).text
    fills = await client.infill(segments=["A ", " b ", " c."], max_tokens=3)
    assert isinstance(fills, list) and len(fills) == 2
    full = await client.infill_result("The quick ", " dog.", max_tokens=5)
    assert isinstance(full, InfillResponse) and full.usage.completion_tokens >= 1
    generated = await client.generate("The quick brown", max_tokens=6)
    assert generated.text == tiny_engine.generate("The quick brown", SamplingParams(max_tokens=6)).text
    chunks = [c async for c in client.generate_stream("The quick brown", max_tokens=6)]
    assert "".join(c.text for c in chunks) == generated.text and chunks[-1].finish_reason == generated.finish_reason
    health = await client.health()
    assert health.ready and health.model == tiny_engine.name and health.backends.generate == "torch"


async def test_server_errors_come_back_as_their_classes(client, tiny_engine):
    with pytest.raises(InputTooLongError, match=str(tiny_engine.max_length)) as raised:
        await client.embed(LONG_TEXT)
    assert raised.value.status == 422
    with pytest.raises(UnknownTaskError, match="no tagging heads"):
        await client.tag("Peter lives in Berlin.", task="ner")
    with pytest.raises(InputTooLongError):
        async for _ in client.generate_stream("x", max_tokens=4000):
            pass


async def test_a_wrong_key_is_unauthorized(tiny_engine):
    app = app_with(tiny_engine, api_key="right")
    async with running_app(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncMagnetClient("http://m", api_key="wrong", transport=transport) as magnet:
            with pytest.raises(UnauthorizedError, match="wrong"):
                await magnet.embed("hi")
            assert (await magnet.health()).ready  # /health is open


def test_sync_client_on_loopback(tiny_engine):
    with serve_on_loopback(app_with(tiny_engine)) as url, MagnetClient(url, retry=Retry(attempts=0)) as magnet:
        assert magnet.infill("The quick ", " the lazy dog.", max_tokens=4) == tiny_engine.infill(
            ["The quick ", " the lazy dog."], replace(INFILL_DEFAULTS, max_tokens=4)).text
        assert len(magnet.embed("a fox").embeddings[0]) == tiny_engine.model.config.hidden_size
        stream = magnet.generate_stream("The quick brown", max_tokens=50)
        first = next(stream)
        stream.close()  # leave early: the connection closes and the server stops decoding
        assert first.finish_reason is None
        assert magnet.generate("The quick", max_tokens=3).usage.completion_tokens >= 1


async def test_a_json_schema_constraint_reaches_the_server_under_its_wire_name(client):
    # the request model names the field json_ (a BaseModel attribute) and the wire json: the
    # client must send the wire name, which the server reads
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    generated = await client.generate("A JSON object:", max_tokens=12, structured_outputs={"json": schema})
    assert generated.text.startswith('{"a":')
