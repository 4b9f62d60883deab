"""POST /v1/chat/completions: the messages rendered with the model's chat template, then
generated like a completion (service.generate / generate_stream: vLLM when it runs, torch
otherwise). Shapes in server/chat_models.py.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

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
from magnet.server.choices import gather_all, interleaved, params_of_choices, started_streams
from magnet.server.disconnect import unless_client_leaves
from magnet.server.logprobs import chat_logprobs
from magnet.server.middleware import request_id_of
from magnet.server.openai_models import StreamUsage
from magnet.server.registry import Resolved, resolved
from magnet.server.routes import OPENAI_ERRORS, SSE_RESPONSES, event_stream, service_of
from magnet.server.structured_models import compiled_ahead

chat_api = APIRouter(prefix="/v1", responses=OPENAI_ERRORS, tags=["openai"])
@chat_api.post("/chat/completions", response_model=ChatCompletion, responses=SSE_RESPONSES)
async def chat_completions(request: Request, call: Resolved[ChatRequest] = resolved(ChatRequest)):
    body, served = call.body, call.model
    service, model = service_of(request), served.id
    tokenizer = served.tokenizer  # logprobs' token texts
    messages = [m.for_template() for m in body.messages]
    prompt = await chat_prompt(service, messages, body.requested_max_tokens)
    params = replace(body.sampling(SamplingParams(), prompt.max_tokens, body.stops), logprobs=body.logprob_count,
                     structured=body.structured())
    await compiled_ahead(served.engine, params.structured)
    answer_id = f"chatcmpl-{request_id_of(request)}"
    choice_params = params_of_choices(params, body.n)
    if body.stream:  # bad input: a 4xx here, before any byte
        streams = await started_streams([service.generate_stream(prompt.text, p, served, prompt.ids)
                                         for p in choice_params])
        return event_stream(sse_chat(answer_id, model, body.n, interleaved(streams), body.include_usage, tokenizer))
    results = await gather_all([unless_client_leaves(request, service.generate(prompt.text, p, served, prompt.ids),
                                                     "generate")
                                for p in choice_params])  # the n choices decode side by side
    choices = [ChatChoice(index=k, message=AssistantMessage(content=r.text), finish_reason=r.finish_reason,
                          logprobs=None if r.logprobs is None else chat_logprobs(tokenizer, r.logprobs))
               for k, r in enumerate(results)]
    usage = Usage(prompt_tokens=results[0].prompt_tokens, completion_tokens=sum(r.completion_tokens for r in results))
    return ChatCompletion(id=answer_id, created=int(time.time()), model=model, choices=choices, usage=usage)


async def sse_chat(answer_id: str, model: str, n: int, chunks: AsyncIterator[tuple[int, StreamChunk]],
                   include_usage: bool, tokenizer) -> AsyncIterator[str]:
    """Each choice's role first, then content pieces (each choice's last with its
    finish_reason), the usage if asked (the prompt counted once, every choice's tokens)."""
    created = int(time.time())

    def event(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        chunk = ChatCompletionChunk(id=answer_id, created=created, model=model, choices=choices, usage=usage)
        return f"data: {chunk.model_dump_json()}\n\n"

    for index in range(n):
        yield event([ChunkChoice(index=index, delta={"role": "assistant", "content": ""})])
    counted = StreamUsage()
    async for index, chunk in chunks:
        if chunk.text or chunk.finish_reason is not None or chunk.logprobs:
            delta = {"content": chunk.text} if chunk.text else {}
            logprobs = chat_logprobs(tokenizer, chunk.logprobs) if chunk.logprobs is not None else None
            yield event([ChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=chunk.finish_reason)])
        counted.add(chunk)
    if include_usage:
        yield event([], counted.usage)
    yield "data: [DONE]\n\n"
