"""The asyncio client: the same methods as MagnetClient, awaited.

    async with AsyncMagnetClient() as client:
        fill = await client.infill("The cat ", " on the mat.")
        async for chunk in client.generate_stream("Once upon a time"): ...
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from magnet.client.base import BaseClient, EventDecoder, Retry, error_from
from magnet.client.encode import ASYNC_CONCURRENCY, Progress, require_numpy, shaped, wire_format
from magnet.client.errors import connection_error
from magnet.protocol import (
    EmbedResponse,
    GenerateChunk,
    GenerateResponse,
    HealthResponse,
    InfillResponse,
    TagResponse,
)


class AsyncMagnetClient(BaseClient):
    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 120.0,
                 retry: Retry = Retry(), transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, api_key, timeout, retry)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers(), timeout=timeout,
                                      transport=transport)

    async def __aenter__(self) -> "AsyncMagnetClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- the API -----------------------------------------------------------------------

    async def embed(self, input: str | list[str], *, instruction: str | None = None, normalize: bool = True,
                    truncate: bool = False, model: str | None = None,
                    encoding_format: str = "float") -> EmbedResponse:
        """`encoding_format="base64"`: each vector comes as the base64 of its little-endian float32
        bytes (~3x fewer bytes; `encode()` asks for it and decodes it with numpy)."""
        body = self.embed_body(input, instruction, normalize, truncate, model, encoding_format)
        return self.parse(await self.send("POST", "/v1/embed", body), EmbedResponse)

    async def encode(self, sentences: str | list[str], batch_size: int = 32, normalize_embeddings: bool = True,
                     convert_to_numpy: bool = True, show_progress_bar: bool = False, instruction: str | None = None,
                     truncate: bool = False, model: str | None = None):
        """MagnetClient.encode, with up to ASYNC_CONCURRENCY batches in flight at once (the
        server batches them further); results keep the input order."""
        if convert_to_numpy:
            require_numpy()
        bodies = self.encode_bodies(sentences, batch_size, normalize_embeddings, instruction, truncate, model,
                                    wire_format(convert_to_numpy))
        progress = Progress(sum(len(b["input"]) for b in bodies), show_progress_bar)
        slots = asyncio.Semaphore(ASYNC_CONCURRENCY)

        async def one(body: dict) -> list[list[float]]:
            async with slots:
                rows = self.parse(await self.send("POST", "/v1/embed", body), EmbedResponse).embeddings
            progress.update(len(body["input"]))
            return rows

        tasks = [asyncio.ensure_future(one(body)) for body in bodies]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one batch failed: do not leave the others running
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            progress.close()
        return shaped([row for part in parts for row in part], isinstance(sentences, str), convert_to_numpy)

    async def tag(self, input: str | list[str] | None = None, *, words: list[list[str]] | None = None,
                  task: str = "ner", model: str | None = None) -> TagResponse:
        body = self.tag_body(input, words, task, model)
        return self.parse(await self.send("POST", "/v1/tag", body), TagResponse)

    async def infill(self, prefix: str | None = None, suffix: str | None = None, *,
                     segments: list[str] | None = None, **sampling) -> str | list[str]:
        """The fill between prefix and suffix (a str), or one fill per gap of `segments` (a list)."""
        result = await self.infill_result(prefix, suffix, segments=segments, **sampling)
        return result.fills if segments is not None else result.text

    async def infill_result(self, prefix: str | None = None, suffix: str | None = None, *,
                            segments: list[str] | None = None, **sampling) -> InfillResponse:
        body = self.infill_body(prefix, suffix, segments, sampling)
        return self.parse(await self.send("POST", "/v1/infill", body), InfillResponse)

    async def generate(self, prompt: str, **sampling) -> GenerateResponse:
        body = self.generate_body(prompt, sampling, stream=False)
        return self.parse(await self.send("POST", "/v1/generate", body), GenerateResponse)

    async def generate_stream(self, prompt: str, **sampling) -> AsyncIterator[GenerateChunk]:
        """Chunks as decoded; closing the iterator early closes the connection (cancels)."""
        body = self.generate_body(prompt, sampling, stream=True)
        response = await self.send("POST", "/v1/generate", body, stream=True)
        try:
            if response.is_error:
                await response.aread()
                raise error_from(response)
            decoder = EventDecoder()
            try:
                async for line in response.aiter_lines():
                    if (chunk := decoder.feed(line)) is not None:
                        yield chunk
            except httpx.TransportError as exc:  # dropped mid-stream: not retried (text was delivered)
                raise connection_error(self.base_url, exc, 1) from exc
        finally:
            await response.aclose()

    async def health(self) -> HealthResponse:
        return self.parse(await self.send("GET", "/health"), HealthResponse)

    # --- I/O ---------------------------------------------------------------------------

    async def send(self, method: str, path: str, body: dict | None = None, stream: bool = False) -> httpx.Response:
        """One request, retried on 429/503 and on refused or dropped connections per `self.retry`
        (before any byte of a stream); a connection that fails for good is a ConnectionFailedError."""
        attempt = 0
        while True:
            request = self.http.build_request(method, path, json=body)
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not self.retry.should_retry_error(exc, attempt):
                    raise connection_error(self.base_url, exc, attempt + 1) from exc
                await asyncio.sleep(self.retry.wait(None, attempt))
                attempt += 1
                continue
            if not self.retry.should_retry(response, attempt):
                return response
            await response.aclose()
            await asyncio.sleep(self.retry.wait(response, attempt))
            attempt += 1
