"""Bodies of the TEI dialect (server/tei_routes.py), as text-embeddings-inference's router
defines them (router/src/http/types.rs, docs/openapi.json), for the fields Magnet serves.

Unknown fields are ignored, as TEI's serde does; options Magnet cannot honour are refused
with a 422 that says what to send instead.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from magnet.protocol import TextChecked, check_texts
from magnet.server.token_inputs import TextsOrIds, check_inputs, refuse_dimensions, refuse_mixed_inputs

# TEI takes "left"/"right" and its enum's own spelling.
TruncationDirection = Literal["left", "right", "Left", "Right"]


class TeiRequest(TextChecked):
    model_config = ConfigDict(extra="ignore")

    truncate: StrictBool | None = Field(None, description="cut inputs to the model's limit instead of a 422; "
                                                          "null = false (auto_truncate in GET /info)")
    truncation_direction: TruncationDirection = Field("right", description="which end a cut input loses")

    @property
    def cuts_left(self) -> bool:
        return bool(self.truncate) and self.truncation_direction.lower() == "left"


class TeiEmbedRequest(TeiRequest):
    inputs: TextsOrIds = Field(description="a text, a list of texts, or this model's token ids (a list, or a "
                                           "list of lists)")
    normalize: StrictBool = True
    prompt_name: str | None = Field(None, description="null: Magnet always prepends its adapter's instruction")
    dimensions: int | None = Field(None, description="null: the model's hidden size (the only one served)")

    @field_validator("inputs", mode="before")
    @classmethod
    def one_kind_of_input(cls, value):
        return refuse_mixed_inputs(value, "inputs")

    @field_validator("inputs")
    @classmethod
    def check_input(cls, value):
        return check_inputs(value, "inputs")

    @field_validator("prompt_name")
    @classmethod
    def refuse_prompt_names(cls, value):
        if value is not None:
            raise ValueError(f"prompt_name {value!r} is not available: Magnet prepends its adapter's own "
                             "instruction to every input (the one it was trained with); omit prompt_name")
        return value

    @field_validator("dimensions")
    @classmethod
    def check_dimensions(cls, value):
        return refuse_dimensions(value)


class TeiRerankRequest(TeiRequest):
    query: str
    texts: list[str] = Field(description="the texts to rank against the query")
    raw_scores: StrictBool = Field(False, description="TEI's flag; the scores are cosines either way")
    return_text: StrictBool = False

    @field_validator("query")
    @classmethod
    def check_query(cls, value: str) -> str:
        check_texts([value], "query")
        return value

    @field_validator("texts")
    @classmethod
    def check_input(cls, value: list[str]) -> list[str]:
        return check_texts(value, "texts", limit=None)


class TeiRank(BaseModel):
    index: int  # into `texts`
    score: float  # cosine similarity with the query, -1 to 1
    text: str | None = None  # only with return_text


class TeiEmbeddingModel(BaseModel):
    pooling: str  # TEI's names: cls, mean, splade, last_token


class TeiModelType(BaseModel):
    embedding: TeiEmbeddingModel


class TeiInfo(BaseModel):
    """GET /info, TEI's Info with Magnet's values."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str  # float32, bfloat16, ...
    served_model_name: str
    model_type: TeiModelType
    max_concurrent_requests: int  # the queue's length (MAGNET_MAX_QUEUE)
    max_input_length: int  # tokens per input, the instruction included
    max_batch_tokens: int  # tokens per model call
    max_batch_requests: int | None = None
    max_client_batch_size: int  # inputs per request (413 above)
    auto_truncate: bool  # what truncate=null means
    tokenization_workers: int
    version: str  # Magnet's
    sha: str | None = None
    docker_label: str | None = None
