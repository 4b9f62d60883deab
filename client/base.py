"""What the sync and async clients share: building requests, parsing answers, errors, retries.

No I/O here (httpx's own split): `MagnetClient` and `AsyncMagnetClient` send
what this builds and hand the responses back to it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import httpx
from pydantic import BaseModel, ValidationError

from magnet.client.encode import as_text_list, batches
from magnet.client.errors import check_base_url
from magnet.errors import (
    ERRORS_BY_CODE,
    BackendError,
    ForbiddenError,
    InvalidInputError,
    MagnetError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from magnet.protocol import (
    EmbedRequest,
    GenerateChunk,
    GenerateRequest,
    InfillRequest,
    TagRequest,
    describe_errors,
)

DEFAULT_URL = "http://localhost:8000"
ERRORS_BY_STATUS = {401: UnauthorizedError, 403: ForbiddenError, 413: PayloadTooLargeError, 422: InvalidInputError,
                    429: OverloadedError, 500: BackendError, 503: NotReadyError}


# Failures before an answer that are retried: the connection was refused (nothing reached the
# server) or dropped before the answer. Every Magnet route only computes and stores nothing, so
# sending a request again is safe: at worst the server repeats work. A read timeout is not
# retried: the server is busy with the request, and a second copy would add to its load.
RETRIED_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                  httpx.WriteError)


@dataclass(frozen=True)
class Retry:
    """Retries of overloaded (429) and not-ready (503) answers, and of refused or dropped
    connections (RETRIED_ERRORS), with exponential backoff.

    Wait before retry k (0-based): backoff * 2**k, at least the server's
    Retry-After, at most max_wait. `Retry(attempts=0)` turns retries off.
    """

    attempts: int = 3
    backoff: float = 0.5
    max_wait: float = 8.0
    statuses: frozenset[int] = frozenset({429, 503})
    errors: tuple[type[Exception], ...] = RETRIED_ERRORS

    def should_retry(self, response: httpx.Response, attempt: int) -> bool:
        return response.status_code in self.statuses and attempt < self.attempts

    def should_retry_error(self, error: Exception, attempt: int) -> bool:
        return isinstance(error, self.errors) and attempt < self.attempts

    def wait(self, response: httpx.Response | None, attempt: int) -> float:
        """Seconds before retry `attempt`; `response` is None after a connection error."""
        told = (retry_after(response) if response is not None else None) or 0.0
        return min(max(self.backoff * 2**attempt, told), self.max_wait)


def retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


class BaseClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 120.0,
                 retry: Retry = Retry()):
        source = "base_url" if base_url else "MAGNET_URL" if os.environ.get("MAGNET_URL") else "the default URL"
        self.base_url = check_base_url(base_url or os.environ.get("MAGNET_URL") or DEFAULT_URL, source).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("MAGNET_API_KEY")
        self.timeout = timeout
        self.retry = retry

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    # --- building ----------------------------------------------------------------------

    @staticmethod
    def build(body_type: type[BaseModel], /, **fields) -> dict:
        """Validate on this side (same models as the server), so bad arguments fail before sending.
        (`fields` may hold `model`, the served model's id.)"""
        try:
            return body_type(**fields).model_dump(mode="json", exclude_none=True, by_alias=True)
        except ValidationError as exc:
            raise InvalidInputError(describe_errors(exc.errors())) from None

    def embed_body(self, input, instruction, normalize, truncate, model=None, encoding_format="float") -> dict:
        return self.build(EmbedRequest, input=input, instruction=instruction, normalize=normalize, truncate=truncate,
                          model=model, encoding_format=encoding_format)

    def encode_bodies(self, sentences, batch_size, normalize, instruction, truncate, model=None,
                      encoding_format="float") -> list[dict]:
        """/v1/embed bodies of batch_size texts each, in order; all validated before any is sent."""
        return [self.embed_body(batch, instruction, normalize, truncate, model, encoding_format)
                for batch in batches(as_text_list(sentences), batch_size)]

    def tag_body(self, input, words, task, model=None) -> dict:
        return self.build(TagRequest, input=input, words=words, task=task, model=model)

    def infill_body(self, prefix, suffix, segments, sampling: dict) -> dict:
        return self.build(InfillRequest, prefix=prefix, suffix=suffix, segments=segments, **sampling)

    def generate_body(self, prompt, sampling: dict, stream: bool) -> dict:
        return self.build(GenerateRequest, prompt=prompt, stream=stream, **sampling)

    # --- parsing -----------------------------------------------------------------------

    @staticmethod
    def parse(response: httpx.Response, model: type[BaseModel]):
        if response.is_error:
            raise error_from(response)
        return model.model_validate_json(response.content)


def error_from(response: httpx.Response) -> MagnetError:
    """The magnet.errors class the server raised, with its message (and Retry-After)."""
    try:
        detail = response.json()["error"]
        code, message = detail["code"], detail["message"]
    except (ValueError, KeyError, TypeError):
        code, message = None, f"HTTP {response.status_code}: {response.text[:500]}"
    if response.status_code == 404 and code in (None, "not_found"):
        message += (f" ({request_line(response)}): no such route here; is the client's base_url this "
                    "server's root (http://host:8000, no path)?")
    cls = ERRORS_BY_CODE.get(code) or ERRORS_BY_STATUS.get(response.status_code, MagnetError)
    if cls is OverloadedError:
        error = OverloadedError(message, retry_after=retry_after(response) or 1.0)
    else:
        error = cls(message)
    error.status = response.status_code  # e.g. 404 for a wrong base URL
    if code and code not in ERRORS_BY_CODE:
        error.code = code
    return error


def request_line(response: httpx.Response) -> str:
    try:
        return f"{response.request.method} {response.request.url}"
    except RuntimeError:  # a response built by hand, with no request
        return "the request"


class EventDecoder:
    """Server-sent events of /v1/generate, fed line by line, as GenerateChunks."""

    def __init__(self):
        self.event = "message"

    def feed(self, line: str) -> GenerateChunk | None:
        if not line:
            self.event = "message"
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self.event = value
        elif field == "data" and self.event == "error":
            detail = json.loads(value)["error"]
            raise ERRORS_BY_CODE.get(detail["code"], MagnetError)(detail["message"])
        elif field == "data" and value != "[DONE]":
            return GenerateChunk.model_validate_json(value)
        return None
