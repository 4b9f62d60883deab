"""Client errors and retries against scripted answers (httpx.MockTransport)."""
from __future__ import annotations

import json

import httpx
import pytest

from magnet.client import (
    AsyncMagnetClient,
    InputTooLongError,
    InvalidInputError,
    MagnetClient,
    MagnetError,
    NotReadyError,
    OverloadedError,
    Retry,
    UnauthorizedError,
)

FAST = Retry(attempts=3, backoff=0.001, max_wait=0.01)
EMBED_OK = {"id": "r1", "model": "m", "embeddings": [[0.6, 0.8]], "usage": {"prompt_tokens": 3}}


def error(status: int, code: str, message: str, **headers) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}}, headers=headers)


class Script:
    """Answers requests in order and records them."""

    def __init__(self, *answers: httpx.Response):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)


def client_for(script: Script, retry: Retry = FAST, **kwargs) -> MagnetClient:
    return MagnetClient("http://magnet", retry=retry, transport=httpx.MockTransport(script), **kwargs)


def test_429_and_503_are_retried_until_success():
    script = Script(error(429, "overloaded", "full", **{"Retry-After": "1"}), error(503, "not_ready", "loading"),
                    httpx.Response(200, json=EMBED_OK))
    assert client_for(script).embed("hi").embeddings == [[0.6, 0.8]]
    assert len(script.requests) == 3
    assert json.loads(script.requests[0].content) == json.loads(script.requests[2].content)


def test_retries_give_up_with_the_typed_error():
    script = Script(*[error(503, "not_ready", "the model is still loading")] * 4)
    with pytest.raises(NotReadyError, match="still loading") as raised:
        client_for(script).embed("hi")
    assert len(script.requests) == 4 and raised.value.status == 503


def test_no_retries_raise_overloaded_with_retry_after():
    script = Script(error(429, "overloaded", "the model queue is full", **{"Retry-After": "7"}))
    with pytest.raises(OverloadedError) as raised:
        client_for(script, retry=Retry(attempts=0)).embed("hi")
    assert raised.value.retry_after == 7.0 and len(script.requests) == 1


def test_backoff_doubles_honours_retry_after_and_is_capped():
    retry = Retry(backoff=0.5, max_wait=8.0)
    plain = httpx.Response(503)
    assert [retry.wait(plain, k) for k in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert retry.wait(httpx.Response(429, headers={"Retry-After": "3"}), 0) == 3.0
    assert retry.wait(httpx.Response(429, headers={"Retry-After": "60"}), 0) == 8.0


@pytest.mark.parametrize("response, cls, status", [
    (error(422, "input_too_long", "an input has 300 tokens; the limit is 256"), InputTooLongError, 422),
    (error(401, "unauthorized", "the API key is wrong"), UnauthorizedError, 401),
    (error(404, "not_found", "Not Found"), MagnetError, 404),
    (httpx.Response(502, text="<html>bad gateway</html>"), MagnetError, 502),
])
def test_errors_are_typed_and_not_retried(response, cls, status):
    script = Script(response)
    with pytest.raises(cls) as raised:
        client_for(script).embed("hi")
    assert type(raised.value) is cls and raised.value.status == status and len(script.requests) == 1


def test_arguments_are_checked_before_sending():
    script = Script()
    client = client_for(script)
    with pytest.raises(InvalidInputError, match="max_tokens"):
        client.generate("x", max_tokens=0)
    with pytest.raises(InvalidInputError, match="not both"):
        client.infill("a", "b", segments=["a", "b"])
    assert script.requests == []


def test_url_and_key_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MAGNET_URL", "http://elsewhere:9000/")
    monkeypatch.setenv("MAGNET_API_KEY", "k1")
    script = Script(httpx.Response(200, json={"ready": True}))
    client = MagnetClient(transport=httpx.MockTransport(script))
    assert client.health().ready is True
    assert str(script.requests[0].url) == "http://elsewhere:9000/health"
    assert script.requests[0].headers["authorization"] == "Bearer k1"


def sse(*events: dict) -> httpx.Response:
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def test_stream_is_retried_before_its_first_byte_and_parsed():
    script = Script(error(429, "overloaded", "full"), sse(
        {"id": "r1", "model": "m", "text": "Hel"},
        {"id": "r1", "model": "m", "text": "lo", "finish_reason": "stop", "usage": {"prompt_tokens": 2, "completion_tokens": 2}}))
    chunks = list(client_for(script).generate_stream("x"))
    assert [c.text for c in chunks] == ["Hel", "lo"] and chunks[-1].usage.total_tokens == 4


def test_an_error_event_mid_stream_raises_its_class():
    failure = {"error": {"code": "backend_error", "message": "gpu fell off"}}
    body = f'data: {{"id": "r1", "model": "m", "text": "a"}}\n\nevent: error\ndata: {json.dumps(failure)}\n\n'
    script = Script(httpx.Response(200, text=body, headers={"content-type": "text/event-stream"}))
    received = []
    with pytest.raises(MagnetError, match="gpu fell off"):
        for chunk in client_for(script).generate_stream("x"):
            received.append(chunk.text)
    assert received == ["a"]


async def test_async_client_retries_too():
    script = Script(error(503, "not_ready", "loading"), httpx.Response(200, json=EMBED_OK))
    async with AsyncMagnetClient("http://magnet", retry=FAST, transport=httpx.MockTransport(script)) as client:
        assert (await client.embed(["hi"])).usage.prompt_tokens == 3
    assert len(script.requests) == 2
