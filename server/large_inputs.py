"""Embedding requests of many inputs: LangChain sends 1,000 texts at a time, OpenAI allows 2,048.

Such a request is accepted up to `max_client_batch_size` inputs (server/settings.py; GET /info
reports it, as TEI does) and refused above it with a 413 naming the limit. The service takes the
whole list as one request: the worker runs it in slices of `max_batch_tokens`, with other requests
between them, and it is priced like any request (its input tokens against `max_request_tokens`).
"""
from __future__ import annotations

from magnet.errors import PayloadTooLargeError
from magnet.server.registry import ServedModel
from magnet.server.service import Embeddings, Service

LIMIT_SETTING = "max_client_batch_size"


def require_batch_size(service: Service, count: int, field: str) -> None:
    limit = getattr(service.settings, LIMIT_SETTING)
    if count > limit:
        raise PayloadTooLargeError(
            f"{field} has {count} inputs, over this server's limit of {limit} per request (GET /info: "
            f"{LIMIT_SETTING}): send at most {limit} at a time (or raise MAGNET_MAX_CLIENT_BATCH_SIZE)")


async def embed_many(service: Service, texts: list[str], field: str, *, instruction: str | None = None,
                     normalize: bool = True, truncate: bool = False,
                     model: "ServedModel | str | None" = None, cut_left: bool = False) -> Embeddings:
    """(N, H) embeddings of up to max_client_batch_size texts, in order (`cut_left`: a
    truncated text keeps its end)."""
    require_batch_size(service, len(texts), field)
    return await service.embed(texts, instruction, normalize, truncate, model, cut_left)
