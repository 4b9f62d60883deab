"""Vectors out as fast as they are made: orjson writes numpy float arrays straight from memory.

    return vectors_response(EmbedResponse.model_construct(id=..., model=..., usage=...),
                            embeddings=encode_vectors(array, "float"))

FastAPI serializes a response model in pydantic-core already, which is fast for small bodies;
for float arrays it first needs Python lists and writes each float32 as a 17-digit double.
orjson takes the (N, H) float32 array itself and writes each value's shortest float32 form
(the same float32 when read back): 8 vectors of 576 dims in ~0.2 ms instead of ~0.76 ms, and
~40% fewer bytes. `encoding_format: "base64"` (OpenAI's) sends each vector as the base64 of its
little-endian float32 bytes: ~4 bytes per value instead of ~11.
"""
from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from magnet.protocol import EncodingFormat

ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class FastJSONResponse(JSONResponse):
    """application/json written by orjson (numpy arrays included)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=ORJSON_OPTIONS)


def as_base64(vector) -> str:
    """One vector as the base64 of its little-endian float32 bytes (OpenAI's encoding_format)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def encode_vectors(vectors: np.ndarray, encoding_format: EncodingFormat) -> np.ndarray | list[str]:
    """(N, H) float32 rows as the response carries them: the array itself, or one base64 string per row."""
    if encoding_format == "base64":
        return [as_base64(row) for row in vectors]
    return vectors


def vectors_response(body: BaseModel, **fields) -> FastJSONResponse:
    """`body` (a response model built with model_construct, its vector fields left out) as JSON,
    with `fields` (numpy arrays, lists of them or base64 strings) put in as they are."""
    dumped = body.model_dump(mode="json", exclude=set(fields))
    return FastJSONResponse({name: fields[name] if name in fields else dumped[name]  # the model's field order
                             for name in type(body).model_fields if name in fields or name in dumped})
