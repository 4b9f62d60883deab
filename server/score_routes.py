"""POST /v1/score: rank texts against a query by embedding similarity (TEI's /rerank shape).

    {"query": str, "texts": [str], "return_text": false, "truncate": false, "instruction": null}
    -> [{"index": i, "score": cosine, "text"?: str}, ...]   best first (ties: input order)

Ranked by server/ranking.py (score = cosine of the normalized vectors), as TEI's
/rerank and the Cohere/Jina /v1/rerank are.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StrictBool, field_validator

from magnet.protocol import Request as NativeRequest
from magnet.protocol import check_texts
from magnet.server.disconnect import unless_client_leaves
from magnet.server.registry import Resolved, resolved
from magnet.server.ranking import rank_texts
from magnet.server.routes import ERRORS, service_of

score_api = APIRouter(prefix="/v1", responses=ERRORS, tags=["magnet"])


class ScoreRequest(NativeRequest):
    query: str
    texts: list[str] = Field(description="the texts to rank against the query")
    return_text: StrictBool = False
    truncate: StrictBool = Field(False, description="cut inputs to the token limit instead of a 422")
    raw_scores: StrictBool = Field(False, description="TEI's flag; cosines are raw either way")
    instruction: str | None = Field(None, description="null = the adapter's instruction")

    @field_validator("query")
    @classmethod
    def check_query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query is empty: give the text to rank against some non-blank content")
        return value

    @field_validator("texts")
    @classmethod
    def check_input(cls, value: list[str]) -> list[str]:
        return check_texts(value, "texts")


class ScoreResult(BaseModel):
    index: int  # into `texts`
    score: float  # cosine similarity with the query, -1 to 1
    text: str | None = None  # only with return_text


@score_api.post("/score", response_model=list[ScoreResult], response_model_exclude_none=True,
                summary="Rank texts by similarity to a query (TEI rerank shape)")
async def score(request: Request, call: Resolved[ScoreRequest] = resolved(ScoreRequest)) -> list[ScoreResult]:
    body, served = call.body, call.model
    ranking = rank_texts(service_of(request), body.query, body.texts, "texts", instruction=body.instruction,
                         truncate=body.truncate, model=served)
    ranked = await unless_client_leaves(request, ranking, "embed")
    return [ScoreResult(index=i, score=ranked.scores[i], text=body.texts[i] if body.return_text else None)
            for i in ranked.order]
