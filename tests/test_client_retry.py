"""Client errors and retries against scripted answers (httpx.MockTransport)."""
from __future__ import annotations

import json
import socket

import httpx
import pytest

from magnet.client import (
    AsyncMagnetClient,
    ConnectionFailedError,
    InputTooLongError,
    InvalidInputError,
    MagnetClient,
    MagnetError,
    NotReadyError,
    OverloadedError,
    Retry,
    UnauthorizedError,
    WrongBaseUrlError,
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


# --- no answer at all: refused, dropped, timed out ------------------------------------------


class Failing:
    """Raises the given httpx errors (instances) in order, then answers with `then`."""

    def __init__(self, *errors: Exception, then: httpx.Response | None = None):
        self.errors, self.then, self.calls = list(errors), then, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.then


def test_a_refused_connection_is_retried_then_raised_as_connection_failed():
    failing = Failing(*[httpx.ConnectError("[Errno 111] Connection refused")] * 4)
    with pytest.raises(ConnectionFailedError, match=r"ConnectError \(4 tries\).*nothing answered at "
                                                    r"http://magnet: start the server \(magnet serve\)"):
        MagnetClient("http://magnet", retry=FAST, transport=httpx.MockTransport(failing)).embed("hi")
    assert failing.calls == 4


def test_a_dropped_connection_is_retried_until_an_answer():
    failing = Failing(httpx.RemoteProtocolError("Server disconnected without sending a response."),
                      httpx.ReadError("connection reset"), then=httpx.Response(200, json=EMBED_OK))
    client = MagnetClient("http://magnet", retry=FAST, transport=httpx.MockTransport(failing))
    assert client.embed("hi").embeddings == [[0.6, 0.8]] and failing.calls == 3


def test_a_read_timeout_is_not_retried_and_names_the_timeout():
    failing = Failing(httpx.ReadTimeout("timed out"), then=httpx.Response(200, json=EMBED_OK))
    with pytest.raises(ConnectionFailedError, match="larger timeout="):
        MagnetClient("http://magnet", retry=FAST, transport=httpx.MockTransport(failing)).embed("hi")
    assert failing.calls == 1


def test_a_connection_that_drops_mid_stream_raises_connection_failed():
    def answer(request: httpx.Request) -> httpx.Response:
        def body():
            yield b'data: {"id": "r1", "model": "m", "text": "a"}\n\n'
            raise httpx.ReadError("connection reset")
        return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})

    received = []
    with pytest.raises(ConnectionFailedError, match="dropped"):
        for chunk in MagnetClient("http://magnet", retry=FAST, transport=httpx.MockTransport(answer)).generate_stream("x"):
            received.append(chunk.text)
    assert received == ["a"]


def test_no_server_listening_is_a_connection_failed_error():
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(ConnectionFailedError, match=f"nothing answered at {url}") as raised:
            MagnetClient(url, retry=Retry(attempts=1, backoff=0.001)).health()
    assert isinstance(raised.value, MagnetError) and raised.value.status is None


async def test_the_async_client_retries_a_refused_connection_and_raises_its_error():
    failing = Failing(httpx.ConnectError("refused"), then=httpx.Response(200, json=EMBED_OK))
    async with AsyncMagnetClient("http://magnet", retry=FAST, transport=httpx.MockTransport(failing)) as client:
        assert (await client.embed("hi")).embeddings == [[0.6, 0.8]]
    refused = Failing(*[httpx.ConnectError("refused")] * 2)
    async with AsyncMagnetClient("http://magnet", retry=Retry(attempts=1, backoff=0.001),
                                 transport=httpx.MockTransport(refused)) as client:
        with pytest.raises(ConnectionFailedError, match="start the server"):
            await client.embed("hi")
    assert refused.calls == 2


# --- the base URL --------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://localhost:8000/v1", "http://localhost:8000/v1/", "https://h/magnet/v1"])
def test_a_base_url_ending_in_v1_says_to_drop_it(url):
    root = url.rstrip("/")[:-3]
    with pytest.raises(WrongBaseUrlError, match=f"drop it and give the server's root, '{root}'"):
        MagnetClient(url)
    with pytest.raises(WrongBaseUrlError, match="base_url"):
        AsyncMagnetClient(url)


def test_magnet_url_ending_in_v1_is_named(monkeypatch):
    monkeypatch.setenv("MAGNET_URL", "http://localhost:8000/v1")
    with pytest.raises(WrongBaseUrlError, match="^MAGNET_URL 'http://localhost:8000/v1' ends in /v1"):
        MagnetClient()


def test_a_404_says_to_check_the_base_url():
    script = Script(error(404, "not_found", "Not Found"))
    with pytest.raises(MagnetError, match=r"Not Found \(POST http://magnet/api/v1/embed\): no such route here; "
                                          "is the client's base_url this server's root") as raised:
        MagnetClient("http://magnet/api", retry=FAST, transport=httpx.MockTransport(script)).embed("hi")
    assert raised.value.status == 404
