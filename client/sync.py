"""The blocking client.

    from magnet.client import MagnetClient
    client = MagnetClient()                        # MAGNET_URL or http://localhost:8000
    client.embed(["a man plays a guitar"]).embeddings
    client.encode(many_texts)                      # -> (N, H) numpy array, batched requests
    client.infill("The cat ", " on the mat.")      # -> the fill, a str
    for chunk in client.generate_stream("Once upon a time"): print(chunk.text, end="")
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import httpx

from magnet.client.base import BaseClient, EventDecoder, Retry, error_from
from magnet.client.encode import Progress, require_numpy, shaped, wire_format
from magnet.client.errors import connection_error
from magnet.protocol import (
    EmbedResponse,
    GenerateChunk,
    GenerateResponse,
    HealthResponse,
    InfillResponse,
    TagResponse,
)


class MagnetClient(BaseClient):
    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 120.0,
                 retry: Retry = Retry(), transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, api_key, timeout, retry)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers(), timeout=timeout,
                                 transport=transport)

    def __enter__(self) -> "MagnetClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- the API -----------------------------------------------------------------------

    def embed(self, input: str | list[str], *, instruction: str | None = None, normalize: bool = True,
              truncate: bool = False, model: str | None = None, encoding_format: str = "float") -> EmbedResponse:
        """`encoding_format="base64"`: each vector comes as the base64 of its little-endian float32
        bytes (~3x fewer bytes; `encode()` asks for it and decodes it with numpy)."""
        body = self.embed_body(input, instruction, normalize, truncate, model, encoding_format)
        return self.parse(self.send("POST", "/v1/embed", body), EmbedResponse)

    def encode(self, sentences: str | list[str], batch_size: int = 32, normalize_embeddings: bool = True,
               convert_to_numpy: bool = True, show_progress_bar: bool = False, instruction: str | None = None,
               truncate: bool = False, model: str | None = None):
        """sentence-transformers' `encode`: any number of texts, sent batch_size (at most
        MAX_INPUTS) per /v1/embed request, in order. A list gives (N, H), a str one (H,) vector:
        float32 numpy arrays, or lists of floats with convert_to_numpy=False."""
        if convert_to_numpy:
            require_numpy()  # before any request
        bodies = self.encode_bodies(sentences, batch_size, normalize_embeddings, instruction, truncate, model,
                                    wire_format(convert_to_numpy))
        rows, progress = [], Progress(sum(len(b["input"]) for b in bodies), show_progress_bar)
        try:
            for body in bodies:
                rows += self.parse(self.send("POST", "/v1/embed", body), EmbedResponse).embeddings
                progress.update(len(body["input"]))
        finally:
            progress.close()
        return shaped(rows, isinstance(sentences, str), convert_to_numpy)

    def tag(self, input: str | list[str] | None = None, *, words: list[list[str]] | None = None,
            task: str = "ner", model: str | None = None) -> TagResponse:
        body = self.tag_body(input, words, task, model)
        return self.parse(self.send("POST", "/v1/tag", body), TagResponse)

    def infill(self, prefix: str | None = None, suffix: str | None = None, *, segments: list[str] | None = None,
               **sampling) -> str | list[str]:
        """The fill between prefix and suffix (a str), or one fill per gap of `segments` (a list)."""
        result = self.infill_result(prefix, suffix, segments=segments, **sampling)
        return result.fills if segments is not None else result.text

    def infill_result(self, prefix: str | None = None, suffix: str | None = None, *,
                      segments: list[str] | None = None, **sampling) -> InfillResponse:
        body = self.infill_body(prefix, suffix, segments, sampling)
        return self.parse(self.send("POST", "/v1/infill", body), InfillResponse)

    def generate(self, prompt: str, **sampling) -> GenerateResponse:
        body = self.generate_body(prompt, sampling, stream=False)
        return self.parse(self.send("POST", "/v1/generate", body), GenerateResponse)

    def generate_stream(self, prompt: str, **sampling) -> Iterator[GenerateChunk]:
        """Chunks as the server decodes them; the last has finish_reason and usage.
        Stopping the iteration early closes the connection, which cancels the generation."""
        body = self.generate_body(prompt, sampling, stream=True)
        response = self.send("POST", "/v1/generate", body, stream=True)
        try:
            if response.is_error:
                response.read()
                raise error_from(response)
            decoder = EventDecoder()
            try:
                for line in response.iter_lines():
                    if (chunk := decoder.feed(line)) is not None:
                        yield chunk
            except httpx.TransportError as exc:  # dropped mid-stream: not retried (text was delivered)
                raise connection_error(self.base_url, exc, 1) from exc
        finally:
            response.close()

    def health(self) -> HealthResponse:
        return self.parse(self.send("GET", "/health"), HealthResponse)

    # --- I/O ---------------------------------------------------------------------------

    def send(self, method: str, path: str, body: dict | None = None, stream: bool = False) -> httpx.Response:
        """One request, retried on 429/503 and on refused or dropped connections per `self.retry`
        (before any byte of a stream); a connection that fails for good is a ConnectionFailedError."""
        attempt = 0
        while True:
            request = self.http.build_request(method, path, json=body)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not self.retry.should_retry_error(exc, attempt):
                    raise connection_error(self.base_url, exc, attempt + 1) from exc
                time.sleep(self.retry.wait(None, attempt))
                attempt += 1
                continue
            if not self.retry.should_retry(response, attempt):
                return response
            response.close()
            time.sleep(self.retry.wait(response, attempt))
            attempt += 1
