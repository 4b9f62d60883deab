"""POST /v1/rerank and /v2/rerank: the Cohere/Jina rerank dialect, with vLLM's shapes.

    {"model"?, "query": str, "documents": [str | {"text": str}], "top_n"?: int, "return_documents": true}
    -> {"id", "model", "usage": {"prompt_tokens", "total_tokens"},
        "results": [{"index", "relevance_score", "document"?: {"text"}}]}     best first

`index` points into `documents`; relevance_score is the cosine of the query's and the document's
embeddings (server/ranking.py: the same number as /v1/score's and /rerank's score). top_n 0 or
null = every document (vLLM's default). return_documents=false leaves `document` out (Cohere's
v2 default; vLLM and Jina always send it, so true is the default here).
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from magnet.protocol import check_texts, lone_surrogate_at
from magnet.server.disconnect import unless_client_leaves
from magnet.server.middleware import request_id_of
from magnet.server.registry import Resolved, resolved
from magnet.server.openai_models import OpenAIRequest
from magnet.server.ranking import rank_texts
from magnet.server.routes import ERRORS, service_of

rerank_api = APIRouter(responses=ERRORS, tags=["rerank"])


class RerankDocument(BaseModel):
    """A document as Cohere's SDK may send it, and as every result carries it."""

    model_config = ConfigDict(extra="ignore")

    text: str


class RerankRequest(OpenAIRequest):
    query: str
    documents: list[str | RerankDocument] = Field(description="texts, or {\"text\": ...} objects")
    top_n: int | None = Field(None, ge=0, description="how many results; 0 or null = all")
    return_documents: StrictBool = Field(True, description="each result carries its document's text")

    @field_validator("query")
    @classmethod
    def check_query(cls, value: str) -> str:
        check_texts([value], "query")
        return value

    @field_validator("documents")
    @classmethod
    def check_documents(cls, value: list) -> list:
        texts = texts_of(value)
        where = lone_surrogate_at(texts, "documents")  # inside {"text": ...} objects too
        if where:
            raise ValueError(f"{where} holds a lone surrogate (an unpaired \\ud800-\\udfff escape): "
                             "send valid Unicode text")
        check_texts(texts, "documents", limit=None)
        return value

    @property
    def texts(self) -> list[str]:
        return texts_of(self.documents)


def texts_of(documents: list[str | RerankDocument]) -> list[str]:
    return [d if isinstance(d, str) else d.text for d in documents]


class RerankResult(BaseModel):
    index: int  # into `documents`
    relevance_score: float  # cosine similarity with the query, -1 to 1
    document: RerankDocument | None = None  # with return_documents


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]


@rerank_api.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True,
                 summary="Rerank documents against a query (Cohere/Jina, as vLLM serves it)")
async def rerank(request: Request, call: Resolved[RerankRequest] = resolved(RerankRequest)) -> RerankResponse:
    body, served = call.body, call.model
    service, model = service_of(request), served.id
    texts = body.texts
    ranked = await unless_client_leaves(request, rank_texts(service, body.query, texts, "documents", model=served),
                                        "embed")
    top = ranked.order[:body.top_n or None]
    results = [RerankResult(index=i, relevance_score=ranked.scores[i],
                            document=RerankDocument(text=texts[i]) if body.return_documents else None) for i in top]
    usage = RerankUsage(prompt_tokens=ranked.prompt_tokens, total_tokens=ranked.prompt_tokens)
    return RerankResponse(id=f"rerank-{request_id_of(request)}", model=model, usage=usage, results=results)


rerank_api.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True,
                summary="Rerank documents against a query (Cohere v2)")(rerank)
