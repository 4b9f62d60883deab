"""Texts ranked against a query by embedding similarity: the one ranking of /v1/score, TEI's
/rerank and the Cohere/Jina /v1/rerank and /v2/rerank.

The query and the texts are embedded in one service call (batched with other embed requests,
run in slices when large); a text's score is the cosine of its normalized vector with the
query's, -1 to 1, the same number on every route. Best first; equal scores keep input order.
"""
from __future__ import annotations

from dataclasses import dataclass

from magnet.server.large_inputs import require_batch_size
from magnet.server.registry import ServedModel
from magnet.server.service import Service


@dataclass
class Ranking:
    scores: list[float]  # by input index
    order: list[int]  # input indices, best first
    prompt_tokens: int  # the query's and every text's


async def rank_texts(service: Service, query: str, texts: list[str], field: str, *, instruction: str | None = None,
                     truncate: bool = False, model: "ServedModel | str | None" = None,
                     cut_left: bool = False) -> Ranking:
    require_batch_size(service, len(texts), field)
    embedded = await service.embed([query, *texts], instruction, True, truncate, model, cut_left)
    scores = (embedded.array[1:] @ embedded.array[0]).tolist()  # (N,): unit vectors, so cosines
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
    return Ranking(scores, order, embedded.prompt_tokens)
