"""POST /tokenize and /detokenize, with vLLM's shapes (at the root, as vLLM serves them):

    /tokenize    {"prompt": str, "add_special_tokens": true, "return_token_strs": false}
                 -> {"tokens": [int], "count": n, "max_model_len": N, "token_strs"?: [str]}
    /detokenize  {"tokens": [int]} -> {"prompt": str}

`add_special_tokens` as the generate path tokenizes (the tokenizer's own
specials); max_model_len is what a prompt plus its completion may take.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, StrictBool, StrictInt

from magnet.errors import InvalidInputError
from magnet.server.context_limit import max_model_len
from magnet.server.registry import Resolved, resolved
from magnet.server.openai_models import OpenAIRequest
from magnet.server.routes import ERRORS, service_of

token_api = APIRouter(responses=ERRORS, tags=["tokens"])


class TokenizeRequest(OpenAIRequest):
    prompt: str
    add_special_tokens: StrictBool = True
    return_token_strs: StrictBool = False


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int
    token_strs: list[str] | None = None  # only when return_token_strs


class DetokenizeRequest(OpenAIRequest):
    tokens: list[StrictInt]


class DetokenizeResponse(BaseModel):
    prompt: str


@token_api.post("/tokenize", response_model=TokenizeResponse, response_model_exclude_none=True,
                summary="Token ids of a prompt (vLLM's shape)")
async def tokenize(request: Request, call: Resolved[TokenizeRequest] = resolved(TokenizeRequest)) -> TokenizeResponse:
    body, tokenizer = call.body, call.model.tokenizer
    service = service_of(request)

    def run() -> TokenizeResponse:
        ids = tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"]
        strs = tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
        return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=max_model_len(service), token_strs=strs)

    return await service.tokenize("tokenize", run)


@token_api.post("/detokenize", response_model=DetokenizeResponse, summary="Text of token ids (vLLM's shape)")
async def detokenize(request: Request,
                     call: Resolved[DetokenizeRequest] = resolved(DetokenizeRequest)) -> DetokenizeResponse:
    body, tokenizer = call.body, call.model.tokenizer
    service = service_of(request)
    require_known_ids(body.tokens, len(tokenizer))
    return DetokenizeResponse(prompt=await service.tokenize("detokenize", lambda: tokenizer.decode(body.tokens)))


def require_known_ids(ids: list[int], vocab_size: int) -> None:
    bad = [(i, t) for i, t in enumerate(ids) if not 0 <= t < vocab_size]
    if bad:
        shown = ", ".join(f"tokens[{i}] = {t}" for i, t in bad[:5])
        raise InvalidInputError(f"{shown}{' ...' if len(bad) > 5 else ''}: not a token id of this model "
                                f"(ids are 0 to {vocab_size - 1})")
