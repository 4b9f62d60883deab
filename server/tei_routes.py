"""The TEI dialect, for clients written for Hugging Face text-embeddings-inference
(huggingface_hub's InferenceClient.feature_extraction, LangChain's HuggingFaceEndpointEmbeddings,
LlamaIndex's TextEmbeddingsInference, Haystack's HuggingFaceAPITextEmbedder and HuggingFaceTEIRanker):

    POST /embed, POST /   {"inputs": str | [str] | ids, "normalize", "truncate", "truncation_direction"}
                          -> [[float]]                      one row per input (a lone text: one row)
    POST /rerank          {"query", "texts": [str], "raw_scores", "return_text", "truncate"}
                          -> [{"index", "score", "text"?}]  best first
    GET /info             model id, dtype, max input length, max client batch size, ...

At the root, as TEI serves them (Magnet's own routes are under /v1/). The default model
serves them; the embeddings are /v1/embed's, the scores /v1/score's.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

import magnet
from magnet.server.disconnect import unless_client_leaves
from magnet.server.fast_json import FastJSONResponse
from magnet.server.large_inputs import embed_many
from magnet.server.ranking import rank_texts
from magnet.server.registry import Resolved, ServedModel, default_model, resolved
from magnet.server.routes import ERRORS, service_of
from magnet.server.tei_models import (TeiEmbeddingModel, TeiEmbedRequest, TeiInfo, TeiModelType, TeiRank,
                                      TeiRerankRequest)
from magnet.server.token_inputs import resolve_texts

tei_api = APIRouter(responses=ERRORS, tags=["tei"])
POOLING = "last_token"  # MAGNET reads the last token's state (TEI's name for it)


@tei_api.post("/embed", response_model=list[list[float]], summary="Embeddings (TEI's /embed)")
async def embed(request: Request, call: Resolved[TeiEmbedRequest] = resolved(TeiEmbedRequest, default_only=True)
                ) -> list[list[float]]:
    body, served = call.body, call.model
    service = service_of(request)
    texts = await resolve_texts(service, served, body.inputs, "inputs")
    embedded = embed_many(service, texts, "inputs", normalize=body.normalize, truncate=bool(body.truncate),
                          model=served, cut_left=body.cuts_left)
    return FastJSONResponse((await unless_client_leaves(request, embedded, "embed")).array)  # (N, H), as TEI


# TEI serves its model's task at the root too; Magnet's is embedding.
tei_api.post("/", response_model=list[list[float]], summary="Embeddings (TEI's POST /)")(embed)


@tei_api.post("/rerank", response_model=list[TeiRank], response_model_exclude_none=True,
              summary="Rank texts by similarity to a query (TEI's /rerank)")
async def rerank(request: Request,
                 call: Resolved[TeiRerankRequest] = resolved(TeiRerankRequest, default_only=True)) -> list[TeiRank]:
    body, served = call.body, call.model
    service = service_of(request)
    ranking = rank_texts(service, body.query, body.texts, "texts", truncate=bool(body.truncate), model=served,
                         cut_left=body.cuts_left)
    ranked = await unless_client_leaves(request, ranking, "embed")
    return [TeiRank(index=i, score=ranked.scores[i], text=body.texts[i] if body.return_text else None)
            for i in ranked.order]


@tei_api.get("/info", response_model=TeiInfo, summary="The served model and the limits (TEI's /info)")
async def info(request: Request, served: ServedModel = Depends(default_model)) -> TeiInfo:
    service = service_of(request)
    model, settings, engine = served.id, service.settings, served.engine  # 503 while loading
    return TeiInfo(model_id=model, model_dtype=service.describe()["dtype"], served_model_name=model,
                   model_type=TeiModelType(embedding=TeiEmbeddingModel(pooling=POOLING)),
                   max_concurrent_requests=settings.max_queue, max_input_length=engine.max_length,
                   max_batch_tokens=settings.max_batch_tokens, max_client_batch_size=settings.max_client_batch_size,
                   auto_truncate=False, tokenization_workers=1, version=magnet.__version__)

