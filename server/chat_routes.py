"""POST /v1/chat/completions: the messages rendered with the model's chat template, then
generated like a completion (service.generate / generate_stream: vLLM when it runs, torch
otherwise). Shapes in server/chat_models.py.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from magnet.protocol import Usage
from magnet.sampling import SamplingParams, StreamChunk
from magnet.server.chat_models import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChunkChoice,
)
from magnet.server.chat_prompt import chat_prompt
from magnet.server.disconnect import unless_client_leaves
from magnet.server.middleware import request_id_of
from magnet.server.model_ids import require_known_model
from magnet.server.routes import ERRORS, SSE_RESPONSES, event_stream, service_of

chat_api = APIRouter(prefix="/v1", responses=ERRORS, tags=["openai"])
@chat_api.post("/chat/completions", response_model=ChatCompletion, responses=SSE_RESPONSES)
async def chat_completions(body: ChatRequest, request: Request):
    service = service_of(request)
    model = require_known_model(service, body.model)
    messages = [m.for_template() for m in body.messages]
    prompt, max_tokens = await chat_prompt(service, messages, body.requested_max_tokens)
    params = body.sampling(SamplingParams(), max_tokens, body.stops)
    answer_id = f"chatcmpl-{request_id_of(request)}"
    if body.stream:
        chunks = await service.generate_stream(prompt, params, model)  # bad input: a 4xx here, before any byte
        return event_stream(sse_chat(answer_id, model, chunks, body.include_usage))
    result = await unless_client_leaves(request, service.generate(prompt, params, model), "generate")
    choice = ChatChoice(index=0, message=AssistantMessage(content=result.text), finish_reason=result.finish_reason)
    usage = Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
    return ChatCompletion(id=answer_id, created=int(time.time()), model=model, choices=[choice], usage=usage)


async def sse_chat(answer_id: str, model: str, chunks: AsyncIterator[StreamChunk],
                   include_usage: bool) -> AsyncIterator[str]:
    """The role first, then content pieces (the last with finish_reason), the usage if asked."""
    created = int(time.time())

    def event(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        chunk = ChatCompletionChunk(id=answer_id, created=created, model=model, choices=choices, usage=usage)
        return f"data: {chunk.model_dump_json()}\n\n"

    yield event([ChunkChoice(delta={"role": "assistant", "content": ""})])
    usage = None
    async for chunk in chunks:
        if chunk.text or chunk.finish_reason is not None:
            delta = {"content": chunk.text} if chunk.text else {}
            yield event([ChunkChoice(delta=delta, finish_reason=chunk.finish_reason)])
        if chunk.finish_reason is not None:
            usage = Usage(prompt_tokens=chunk.prompt_tokens, completion_tokens=chunk.completion_tokens)
    if include_usage and usage is not None:
        yield event([], usage)
    yield "data: [DONE]\n\n"
