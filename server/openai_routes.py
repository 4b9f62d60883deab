"""OpenAI-compatible routes: the official SDK works with base_url="http://HOST:PORT/v1".

/v1/completions with `suffix` runs infill (the text between prompt and suffix);
/v1/chat/completions is in server/chat_routes.py. A request's `model` must be
one of server/model_ids.py's ids, or left out.
"""
from __future__ import annotations

from dataclasses import asdict, replace
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from magnet.protocol import ErrorBody, Usage
from magnet.sampling import INFILL_DEFAULTS, InfillCompletion, SamplingParams, StreamChunk
from magnet.server.choices import gather_all, interleaved, params_of_choices, started_streams
from magnet.server.disconnect import unless_client_leaves
from magnet.server.fast_json import encode_vectors, vectors_response
from magnet.server.logprobs import completion_logprobs
from magnet.server.large_inputs import embed_many
from magnet.server.middleware import request_id_of
from magnet.server.registry import Resolved, ServedModel, resolved
from magnet.server.openai_models import (
    CompletionChoice,
    CompletionsRequest,
    CompletionsResponse,
    EmbeddingData,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelCard,
    ModelList,
    StreamUsage,
)
from magnet.server.routes import OPENAI_ERRORS, SSE_RESPONSES, event_stream, service_of
from magnet.server.structured_models import compiled_ahead
from magnet.server.token_inputs import as_id_lists, has_ids, resolve_texts

openai_api = APIRouter(prefix="/v1", responses=OPENAI_ERRORS, tags=["openai"])
STARTED = int(time.time())


@openai_api.post("/embeddings", response_model=EmbeddingsResponse)
async def embeddings(request: Request,
                     call: Resolved[EmbeddingsRequest] = resolved(EmbeddingsRequest)) -> EmbeddingsResponse:
    body, served = call.body, call.model
    service, model = service_of(request), served.id
    texts = await resolve_texts(service, served, body.input, "input")  # token ids decoded
    result = await unless_client_leaves(request, embed_many(service, texts, "input", model=served), "embed")
    rows = encode_vectors(result.array, body.encoding_format)
    fields = EmbeddingData.model_construct(index=0).model_dump(exclude={"embedding"})  # object, index
    data = [{**fields, "index": i, "embedding": row} for i, row in enumerate(rows)]
    answer = EmbeddingsResponse.model_construct(model=model, usage=Usage(prompt_tokens=result.prompt_tokens))
    return vectors_response(answer, data=data)


@openai_api.post("/completions", response_model=CompletionsResponse, responses=SSE_RESPONSES)
async def completions(request: Request, call: Resolved[CompletionsRequest] = resolved(CompletionsRequest)):
    body, served = call.body, call.model
    service, model, tokenizer = service_of(request), served.id, served.tokenizer
    # token-id prompts are generated from as sent (re-tokenizing the text they spell need not give
    # them back: lm-eval scores the ids it sent) and echoed as that text
    sent_ids = as_id_lists(body.prompt) if has_ids(body.prompt) else [None] * len(body.prompts)
    body = body.model_copy(update={"prompt": await resolve_texts(service, served, body.prompt, "prompt")})
    defaults = INFILL_DEFAULTS if body.suffix is not None else SamplingParams()
    params = replace(body.sampling(defaults, body.max_tokens, body.stops), **body.logprob_params(),
                     structured=body.structured())
    await compiled_ahead(served.engine, params.structured, body.prompts if body.suffix is not None else ())
    choice_params = params_of_choices(params, body.n)
    answer_id = f"cmpl-{request_id_of(request)}"
    if body.stream and body.suffix is None and len(body.prompts) == 1:
        # bad input: a 4xx here, before any byte
        streams = await started_streams([service.generate_stream(body.prompts[0], p, served, sent_ids[0])
                                         for p in choice_params])
        return event_stream(sse_completion(model, answer_id, interleaved(streams), tokenizer,
                                           body.prompts[0] if body.echo else "", body.logprobs is not None,
                                           body.include_usage))

    def answer_to(prompt: str, ids: list[int] | None, choice: SamplingParams):
        if body.suffix is not None:
            return unless_client_leaves(request, service.infill([prompt, body.suffix], choice, served), "infill")
        return unless_client_leaves(request, service.generate(prompt, choice, served, ids), "generate")

    # Every prompt's n choices decode side by side (rows of one running batch); choice k of
    # prompt i is index i * n + k, as OpenAI numbers them. One failing cancels the rest.
    results = await gather_all([answer_to(prompt, ids, choice) for prompt, ids in zip(body.prompts, sent_ids)
                                for choice in choice_params])
    prompts = [prompt for prompt in body.prompts for _ in choice_params]  # choice i's prompt
    choices = [completion_choice(i, r, prompts[i] if body.echo else "", tokenizer, body.logprobs is not None)
               for i, r in enumerate(results)]
    usage = Usage(prompt_tokens=sum(r.prompt_tokens for r in results[::body.n]),  # each prompt counted once
                  completion_tokens=sum(r.completion_tokens for r in results))
    answer = CompletionsResponse(id=answer_id, created=int(time.time()), model=model,
                                 choices=choices, usage=usage)
    if body.stream:  # infill or several prompts: computed whole, sent as one event
        return event_stream(one_event(answer))
    return answer


def completion_choice(index: int, result, echoed: str, tokenizer, show_logprobs: bool) -> CompletionChoice:
    """One choice: `echoed` (the prompt, with echo) before the text; logprobs when asked for:
    the prompt's (echo) then the completion's, an infill's of its fill."""
    logprobs = result.logprobs
    if isinstance(result, InfillCompletion) and logprobs is not None:
        logprobs = logprobs[0]  # /v1/completions has one gap
    elif getattr(result, "prompt_logprobs", None) is not None:
        logprobs = result.prompt_logprobs + (logprobs or [])
    shaped = completion_logprobs(tokenizer, logprobs) if logprobs is not None and show_logprobs else None
    return CompletionChoice(text=echoed + result.text, index=index, logprobs=shaped, finish_reason=result.finish_reason)


async def sse_completion(model: str, answer_id: str, chunks: AsyncIterator[tuple[int, StreamChunk]],
                         tokenizer, echoed: str = "", show_logprobs: bool = False,
                         include_usage: bool = False) -> AsyncIterator[str]:
    """Each choice's chunks as events; with echo, its first event starts with the prompt
    (`echoed`) and, with logprobs, the prompt's tokens (the backends send them first); the
    usage last if asked (stream_options.include_usage), with no choices, as OpenAI sends it."""
    created = int(time.time())
    offsets: dict[int, int] = {}  # choice -> characters its tokens covered so far
    counted = StreamUsage()
    async for index, chunk in chunks:
        counted.add(chunk)
        text = chunk.text if index in offsets else echoed + chunk.text
        entries = (chunk.prompt_logprobs or []) + (chunk.logprobs or [])
        logprobs = None
        if show_logprobs and (chunk.logprobs is not None or chunk.prompt_logprobs is not None):
            logprobs = completion_logprobs(tokenizer, entries, offsets.get(index, 0))
        offsets[index] = offsets.get(index, 0) + (sum(len(t) for t in logprobs.tokens) if logprobs else 0)
        choice = CompletionChoice(text=text, index=index, logprobs=logprobs, finish_reason=chunk.finish_reason)
        event = CompletionsResponse(id=answer_id, created=created, model=model, choices=[choice])
        yield f"data: {event.model_dump_json()}\n\n"
    if include_usage:
        event = CompletionsResponse(id=answer_id, created=created, model=model, choices=[], usage=counted.usage)
        yield f"data: {event.model_dump_json()}\n\n"
    yield "data: [DONE]\n\n"


async def one_event(answer: CompletionsResponse) -> AsyncIterator[str]:
    yield f"data: {answer.model_dump_json()}\n\n"
    yield "data: [DONE]\n\n"


@openai_api.get("/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    """Every served model, the default first (its alias among its `aliases`)."""
    service = service_of(request)
    service.require_ready()
    return ModelList(data=[model_card(service, service.models[model_id]) for model_id in service.models])


@openai_api.get("/models/{model_id:path}", response_model=ModelCard, responses={404: {"model": ErrorBody}})
async def model(model_id: str, request: Request) -> ModelCard:
    """A served model under any of its ids; another id is a 404 naming the served ones."""
    service = service_of(request)
    return model_card(service, service.serving(model_id))


def model_card(service, served: ServedModel) -> ModelCard:
    loaded = served.engine.loaded
    manifest = asdict(loaded.manifest) if loaded.manifest is not None else None
    return ModelCard(id=served.id, created=STARTED, aliases=service.models.aliases_of(served.id),
                     backends=service.backends_of(served.id), dtypes=service.dtypes_of(served.id),
                     engine=loaded.name, manifest=manifest)
