"""The native API: /v1/embed, /v1/tag, /v1/infill, /v1/generate, and /health, /ready, /metrics."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from magnet.errors import MagnetError
from magnet.protocol import (
    EmbedRequest,
    EmbedResponse,
    ErrorBody,
    GenerateChunk,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    InfillRequest,
    InfillResponse,
    TagRequest,
    TagResponse,
    Usage,
)
from magnet.sampling import INFILL_DEFAULTS, SamplingParams, StreamChunk
from magnet.server import metrics
from magnet.server.disconnect import unless_client_leaves
from magnet.server.logprobs import completion_logprobs
from magnet.server.fast_json import encode_vectors, vectors_response
from magnet.server.large_inputs import embed_many
from magnet.server.middleware import request_id_of
from magnet.server.registry import Resolved, resolved
from magnet.server.service import Service
from magnet.server.structured_models import compiled_ahead

ERRORS = {status: {"model": ErrorBody} for status in (401, 404, 408, 413, 422, 429, 500, 503)}
OPENAI_ERRORS = {**ERRORS, 400: {"model": ErrorBody}}  # they refuse bad input with a 400 (server/errors.py)

api = APIRouter(prefix="/v1", responses=ERRORS)
probes = APIRouter()


def service_of(request: Request) -> Service:
    return request.app.state.service


@api.post("/embed", response_model=EmbedResponse, summary="Sentence embeddings (bidirectional)")
async def embed(request: Request, call: Resolved[EmbedRequest] = resolved(EmbedRequest)) -> EmbedResponse:
    body, served = call.body, call.model
    service = service_of(request)
    result = await unless_client_leaves(
        request, embed_many(service, body.texts, "input", instruction=body.instruction, normalize=body.normalize,
                            truncate=body.truncate, model=served), "embed")
    answer = EmbedResponse.model_construct(id=request_id_of(request), model=served.id,
                                           usage=Usage(prompt_tokens=result.prompt_tokens))
    return vectors_response(answer, embeddings=encode_vectors(result.array, body.encoding_format))


@api.post("/tag", response_model=TagResponse, summary="NER, POS or chunk tags per word")
async def tag(request: Request, call: Resolved[TagRequest] = resolved(TagRequest)) -> TagResponse:
    body, served = call.body, call.model
    results = await unless_client_leaves(request, service_of(request).tag(body.texts, body.words, body.task, served),
                                         "tag")
    return TagResponse(id=request_id_of(request), model=served.id, task=body.task, results=results)


@api.post("/infill", response_model=InfillResponse, summary="Fill the gap(s) between text segments")
async def infill(request: Request, call: Resolved[InfillRequest] = resolved(InfillRequest)) -> InfillResponse:
    body, served = call.body, call.model
    service = service_of(request)
    params = replace(body.sampling(INFILL_DEFAULTS, body.max_tokens, body.stop), structured=body.constraint(),
                     logprobs=body.logprobs)
    segments = body.as_segments()
    await compiled_ahead(served.engine, params.structured, segments[:-1])
    tokenizer = served.tokenizer
    result = await unless_client_leaves(request, service.infill(segments, params, served), "infill")
    usage = Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
    logprobs = None if result.logprobs is None else [completion_logprobs(tokenizer, fill) for fill in result.logprobs]
    return InfillResponse(id=request_id_of(request), model=served.id, text=result.text,
                          finish_reason=result.finish_reason, fills=result.fills, finish_reasons=result.finish_reasons,
                          usage=usage, logprobs=logprobs)


# A route that streams with stream=true: its 200 is JSON or server-sent events.
SSE_RESPONSES = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}}


@api.post("/generate", response_model=GenerateResponse, summary="Continue a prompt (causal)", responses=SSE_RESPONSES)
async def generate(request: Request, call: Resolved[GenerateRequest] = resolved(GenerateRequest)):
    body, served = call.body, call.model
    service = service_of(request)
    params = replace(body.sampling(SamplingParams(), body.max_tokens, body.stop), structured=body.constraint())
    await compiled_ahead(served.engine, params.structured)
    if body.stream:
        chunks = await service.generate_stream(body.prompt, params, served)
        return event_stream(sse_generate(request_id_of(request), served.id, chunks))
    result = await unless_client_leaves(request, service.generate(body.prompt, params, served), "generate")
    usage = Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
    return GenerateResponse(id=request_id_of(request), model=served.id, text=result.text,
                            finish_reason=result.finish_reason, usage=usage)


async def sse_generate(answer_id: str, model: str, chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[str]:
    async for chunk in chunks:
        usage = None
        if chunk.finish_reason is not None:
            usage = Usage(prompt_tokens=chunk.prompt_tokens, completion_tokens=chunk.completion_tokens)
        event = GenerateChunk(id=answer_id, model=model, text=chunk.text, finish_reason=chunk.finish_reason, usage=usage)
        yield f"data: {event.model_dump_json()}\n\n"
    yield "data: [DONE]\n\n"


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """Server-sent events; an error after the first byte is sent as an `error` event."""

    async def guarded() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except MagnetError as exc:
            body = ErrorBody(error={"code": exc.code, "message": exc.message})
            yield f"event: error\ndata: {body.model_dump_json()}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(guarded(), media_type="text/event-stream", headers=headers)


@probes.get("/health", response_model=HealthResponse, summary="Alive, and which backend serves what")
async def health(request: Request) -> HealthResponse:
    return service_of(request).health()


@probes.get("/ready", response_model=HealthResponse, responses={503: {"model": ErrorBody}},
            summary="200 once the model is loaded and warm and every backend serves, 503 otherwise")
async def ready(request: Request) -> HealthResponse:
    service = service_of(request)
    service.require_every_backend()  # 503 with the reason: loading, failed, shutting down, engine restarting
    return service.health()


@probes.get("/metrics", summary="Prometheus metrics (magnet_* and, with vLLM, vllm:*)", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
