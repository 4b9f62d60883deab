"""The FastAPI app: `create_app(settings, engine=None)`.

    app = create_app(Settings())                    # loads the model in the background
    app = create_app(settings, engine=tiny_engine)  # tests: an engine already loaded

The lifespan starts the model worker and loads the model without blocking
start-up (/health answers at once, /ready turns 200 once the model is warm);
at shutdown (uvicorn's SIGTERM, after in-flight requests finish) it drains the
queue and stops the worker.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

import magnet
from magnet.server.api_docs import install_api_docs
from magnet.server.chat_routes import chat_api
from magnet.server.errors import install_error_handlers
from magnet.server.auth import ApiKeyAuth, read_api_key
from magnet.server.lora_routes import lora_api
from magnet.server.middleware import BodyLimit, RequestId, RequestMetrics
from magnet.server.openai_routes import openai_api
from magnet.server.rerank_routes import rerank_api
from magnet.server.routes import api, probes
from magnet.server.score_routes import score_api
from magnet.server.service import Service
from magnet.server.settings import Settings
from magnet.server.shutdown import ShutdownDeadline
from magnet.server.tei_routes import tei_api
from magnet.server.token_routes import token_api

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, engine=None, tagger=None) -> FastAPI:
    settings = settings or Settings()
    service = Service(settings, engine=engine, tagger=tagger)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(start_quietly(service), name="magnet-load")
        try:
            yield
        finally:
            await service.close()
            loading.cancel()

    app = FastAPI(
        title="Magnet",
        version=magnet.__version__,
        summary="One decoder-only LLM as encoder, tagger, infiller and generator.",
        lifespan=lifespan,
        docs_url=None,  # served by install_api_docs, from local files
        redoc_url=None,
    )
    app.state.service = service
    app.include_router(api, tags=["magnet"])
    app.include_router(score_api)
    app.include_router(openai_api)
    app.include_router(chat_api)
    app.include_router(token_api)
    app.include_router(rerank_api)  # /v1/rerank, /v2/rerank (Cohere/Jina)
    app.include_router(tei_api)  # TEI's /embed, /, /rerank, /info
    app.include_router(lora_api)  # /v1/load_lora_adapter, /v1/unload_lora_adapter (vLLM's)
    app.include_router(probes, tags=["probes"])
    install_api_docs(app)
    app.router.redirect_slashes = False  # POST /v1/embed/ is a 404, not a 307 that skips the checks
    install_error_handlers(app)
    # Outermost last: request id -> metrics -> shutdown deadline -> API key (before any body is
    # read) -> body limits.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(ApiKeyAuth, api_key=read_api_key(settings.api_key, settings.api_key_file))
    app.add_middleware(ShutdownDeadline, draining=service.draining)  # JSON 503 when the grace period ends
    app.add_middleware(RequestMetrics)  # counts 401s and 413s too
    app.add_middleware(RequestId)
    state_token_limits(app, settings.max_length)
    return app


TOKEN_COUNT_FIELDS = ("max_tokens", "max_completion_tokens")


def state_token_limits(app: FastAPI, max_length: int) -> None:
    """The OpenAPI schema states this server's limit on new tokens: no request may ask for more
    than `max_length` (prompt included; the request is refused with a 4xx saying so), though
    the request models allow up to MAX_NEW_TOKENS for servers with longer contexts."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for component in schema.get("components", {}).get("schemas", {}).values():
                for name in TOKEN_COUNT_FIELDS:
                    field = component.get("properties", {}).get(name)
                    for variant in ([field] if field else []) + (field or {}).get("anyOf", []):
                        if "maximum" in variant:
                            variant["maximum"] = min(variant["maximum"], max_length)
        return app.openapi_schema

    app.openapi = openapi


async def start_quietly(service: Service) -> None:
    """Load in the background; a failure is logged and reported by /ready (503)."""
    with contextlib.suppress(Exception):
        await service.start()
