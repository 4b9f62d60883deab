"""Structured output on /v1/completions and /v1/chat/completions (infill included), in the two
dialects clients send; both become one magnet.sampling.StructuredOutput:

    response_format      OpenAI: {"type": "text" | "json_object"}
                         | {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
    structured_outputs   vLLM: {"choice": [...]} | {"regex": "..."} | {"json": schema} | {"json_object": true}
                         (magnet/protocol.py: the native /v1/generate and /v1/infill take it too)

An infill's fill takes choice or regex (JSON constrains generation only). vLLM's `grammar`
and `structural_tag` are refused with a 422. vLLM's older `guided_choice`, `guided_regex` and
`guided_json` are read as structured_outputs (`GUIDED_FIELDS`).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from magnet.layout import split_trailing_spaces
from magnet.protocol import StructuredOutputs
from magnet.sampling import StructuredOutput

class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")  # {} = any JSON value
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format json_schema needs its json_schema: {'name': ..., 'schema': {...}}")
        return self


# vLLM's fields before structured_outputs replaced them, which older clients (outlines, scripts
# written for vLLM < 0.12) still send: the same constraints, read as structured_outputs.
GUIDED_FIELDS = {"guided_choice": "choice", "guided_regex": "regex", "guided_json": "json",
                 "guided_grammar": "grammar"}


class StructuredFields(BaseModel):
    """The two fields of a generating OpenAI route; `structured()` is what they ask for."""

    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None

    @model_validator(mode="before")
    @classmethod
    def guided_fields_are_structured_outputs(cls, data):
        if not isinstance(data, dict) or not any(data.get(key) is not None for key in GUIDED_FIELDS):
            return data
        if data.get("structured_outputs") is not None:
            raise ValueError("send structured_outputs or vLLM's older guided_* fields, not both")
        guided = {GUIDED_FIELDS[key]: value for key, value in data.items() if key in GUIDED_FIELDS and value is not None}
        return {**{k: v for k, v in data.items() if k not in GUIDED_FIELDS}, "structured_outputs": guided}

    @model_validator(mode="after")
    def one_constraint(self):
        self.structured()  # a constraint that cannot be built is a 422 here
        return self

    def structured(self) -> StructuredOutput | None:
        given = []
        if self.response_format is not None and self.response_format.type != "text":
            given.append(from_response_format(self.response_format))
        if self.structured_outputs is not None:
            given.append(self.structured_outputs.constraint())
        if len(given) > 1:
            raise ValueError("send one of response_format (json) and structured_outputs, not both")
        return given[0] if given else None


async def compiled_ahead(engine, spec: StructuredOutput | None, before_gaps: list[str] = ()) -> None:
    """Compile the request's constraint on a thread before it is queued: a regex or schema that
    does not compile is a 422 now, and the model thread never compiles a grammar (a big one takes
    seconds, which every request would wait). `before_gaps`: an infill's segments before its gaps;
    each fill's grammar first matches the spaces cut from the end of the segment before it
    (magnet/layout.py), so each count of them is its own grammar, compiled here too."""
    if spec is None:
        return
    spaces = sorted({split_trailing_spaces(segment)[1] for segment in before_gaps} or {0})
    await asyncio.to_thread(lambda: [engine.compile_structured(spec, n) for n in spaces])


def from_response_format(fmt: ResponseFormat) -> StructuredOutput:
    if fmt.type == "json_object":
        return StructuredOutput(json_object=True)
    schema = fmt.json_schema.schema_
    return StructuredOutput(json=json.dumps(schema)) if schema else StructuredOutput(json_object=True)
