"""Request and response bodies of the HTTP API, shared by server and client.

Pydantic only (no torch): the server validates requests with these models and
FastAPI publishes them at /docs; the client builds requests and parses
responses with the very same classes. Limits live here so both sides agree on
what "out of range" means; every message names the field and what to send.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator, model_validator

from magnet.sampling import MAX_LOGPROBS, SamplingParams, StructuredOutput

MAX_INPUTS = 256  # texts per /v1/embed or /v1/tag request
MAX_NEW_TOKENS = 4096  # upper bound on max_tokens for infill and generate
MAX_STOP = 8  # stop strings per request
MAX_BEST_OF = 16  # infill candidates per request
MAX_CHOICES = 16  # `n`: choices per prompt on the OpenAI routes
MAX_STRUCTURED_CHOICES = 256  # strings in a structured_outputs choice list
MAX_PATTERN_CHARS = 4096  # a structured_outputs regex's length

FinishReason = Literal["stop", "length"]
EncodingFormat = Literal["float", "base64"]  # of embeddings: base64 = little-endian float32 bytes

# A text that must hold a non-space character: stated in the OpenAPI schema (pattern), enforced
# by the models' validators with messages that name the field and the index.
Text = Annotated[str, WithJsonSchema({"type": "string", "minLength": 1, "pattern": "\\S"})]


def lone_surrogate_at(value, where: str) -> str | None:
    """The path of the first string holding a lone UTF-16 surrogate (JSON's "\\ud800"), or None:
    no tokenizer can encode one, so it is the caller's error, not the server's."""
    if isinstance(value, str):
        return where if any("\ud800" <= ch <= "\udfff" for ch in value) else None
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return None
    return next((found for k, v in items if (found := lone_surrogate_at(v, f"{where}[{k}]"))), None)


class TextChecked(BaseModel):
    """Every request body: no string field may hold a lone surrogate, and no number field takes
    true/false (JSON's booleans are not 1 and 0: `"max_tokens": true` is a mistake, not 1)."""

    @model_validator(mode="before")
    @classmethod
    def refuse_booleans_as_numbers(cls, data):
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if isinstance(data.get(field.alias or name), bool) and takes_number_not_bool(field.annotation):
                    raise ValueError(f"{name} must be a number, not {str(data[field.alias or name]).lower()}")
        return data

    @model_validator(mode="after")
    def refuse_lone_surrogates(self):
        for name in type(self).model_fields:
            where = lone_surrogate_at(getattr(self, name), name)
            if where:
                raise ValueError(f"{where} holds a lone surrogate (an unpaired \\ud800-\\udfff escape): "
                                 "send valid Unicode text")
        return self


def takes_number_not_bool(annotation) -> bool:
    """Whether a field's type is int or float (or optional), and not bool."""
    kinds = set(get_args(annotation)) or {annotation}
    return bool(kinds & {int, float}) and bool not in kinds


class Request(TextChecked):
    """Native requests reject unknown fields, so a typo is a 422, not a silent default."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="a served model id (GET /v1/models), e.g. a named adapter; "
                                                "null = the default model")


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @model_validator(mode="after")
    def fill_total(self) -> "Usage":
        if not self.total_tokens:
            self.total_tokens = self.prompt_tokens + self.completion_tokens
        return self


class ErrorDetail(BaseModel):
    code: str  # a key of magnet.errors.ERRORS_BY_CODE (the OpenAI routes: OpenAI's codes, server/errors.py)
    message: str
    type: str | None = None  # the OpenAI routes only: OpenAI's error type
    param: str | None = None  # the OpenAI routes only


class ErrorBody(BaseModel):
    """Every non-2xx answer: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


def describe_errors(errors: list[dict]) -> str:
    """Pydantic errors as 'field: what is wrong; ...' (server 422 bodies, client-side checks)."""
    lines = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            where, message = "", f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
        elif error.get("type") == "missing":
            message = "this field is required"
        lines.append(f"{where}: {message}" if where and not message.startswith(where) else message)
    return "; ".join(lines) or "the request is invalid"


def check_texts(texts: list[str], field: str, limit: int | None = MAX_INPUTS) -> list[str]:
    """Non-empty, every text non-blank, at most `limit` of them (None: the server counts them
    against its own limit, as its TEI, rerank and OpenAI embeddings routes do)."""
    if not texts:
        raise ValueError(f"{field} is an empty list: send at least one text")
    if limit is not None and len(texts) > limit:
        raise ValueError(f"{field} has {len(texts)} texts: send at most {limit} per request")
    for i, text in enumerate(texts):
        check_text(text, f"{field}[{i}]")
    return texts


def check_text(text: str, field: str) -> str:
    """The rule of `Text`: some non-blank content."""
    if not text.strip():
        raise ValueError(f"{field} is empty: every text needs some non-blank content")
    return text


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# --- /v1/embed -------------------------------------------------------------------------


class EmbedRequest(Request):
    input: Text | list[Text] = Field(description="one text or a list of texts")
    instruction: str | None = Field(None, description="null = the adapter's instruction")
    normalize: StrictBool = True
    truncate: StrictBool = Field(False, description="cut inputs to the token limit instead of a 422")
    encoding_format: EncodingFormat = Field(
        "float", description="base64: each vector as the base64 of its little-endian float32 bytes (as OpenAI's)")

    @field_validator("input")
    @classmethod
    def check_input(cls, value: str | list[str]) -> str | list[str]:
        check_texts(as_list(value), "input")
        return value

    @property
    def texts(self) -> list[str]:
        return as_list(self.input)


class EmbedResponse(BaseModel):
    id: str = Field(description="the request id (X-Request-Id, generated when the request had none)")
    model: str
    embeddings: list[list[float]] | list[str]  # (N, H), one row per input, in order (str: base64 float32)
    usage: Usage


# --- /v1/tag ---------------------------------------------------------------------------


class TagRequest(Request):
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["input"]}, {"required": ["words"]}]})

    input: Text | list[Text] | None = Field(None, description="raw text(s); offsets are characters")
    words: list[list[str]] | None = Field(None, description="pre-split words; offsets are word indices")
    task: str = Field("ner", description="a loaded task, e.g. ner, pos or chunk")

    @model_validator(mode="after")
    def check_one_source(self) -> "TagRequest":
        if (self.input is None) == (self.words is None):
            raise ValueError("send exactly one of 'input' (text) or 'words' (pre-split)")
        if self.input is not None:
            check_texts(as_list(self.input), "input")
        else:
            check_texts([" ".join(w) for w in self.words], "words")
            for i, sentence in enumerate(self.words):
                if any(not w.strip() for w in sentence):
                    raise ValueError(f"words[{i}] holds an empty word: drop it or join it to a neighbour")
        return self

    @property
    def texts(self) -> list[str] | None:
        return None if self.input is None else as_list(self.input)


class Entity(BaseModel):
    text: str
    label: str
    start: int  # character offset into the input (word index when words were given)
    end: int  # exclusive


class TagResult(BaseModel):
    words: list[str]
    tags: list[str]
    entities: list[Entity] = []  # IOB2 spans, for ner and chunk


class TagResponse(BaseModel):
    id: str = Field(description="the request id (X-Request-Id, generated when the request had none)")
    model: str
    task: str
    results: list[TagResult]


# --- /v1/infill and /v1/generate -------------------------------------------------------


class SamplingControls(BaseModel):
    """The sampling fields every generating route takes, with vLLM's names and meanings
    (magnet/sampler.py). A field left out (null) takes the route's default: see
    `params(defaults)`; /v1/infill's defaults discourage loops (INFILL_DEFAULTS)."""

    top_k: int | None = Field(None, ge=-1, description="keep the k most likely tokens; 0 or -1 = all")
    min_p: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False,
                                description="drop tokens below min_p x the top token's probability")
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, allow_inf_nan=False,
                                             description="> 1 discourages tokens already in the prompt or output")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False,
                                            description="subtracted per earlier occurrence in the output")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False,
                                           description="subtracted once if the token is already in the output")
    ignore_eos: StrictBool | None = Field(None, description="keep generating past EOS up to max_tokens "
                                                            "(benchmarks); a gap still ends at its suffix")

    def sampling(self, defaults: SamplingParams, max_tokens: int, stop) -> SamplingParams:
        """The request's fields over a route's defaults: the one mapping of every generating
        route (the request model also has temperature, top_p and seed)."""
        return replace(defaults, max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                       seed=self.seed, stop=tuple(stop), **self.controls())

    def controls(self) -> dict:
        """The controls that were given, as SamplingParams fields (top_k -1 means all: 0)."""
        names = [*SamplingControls.model_fields, "best_of"]
        given = {k: getattr(self, k) for k in names if getattr(self, k, None) is not None}
        if given.get("top_k") == -1:
            given["top_k"] = 0
        return given


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`: what the text (an infill: each fill) must match, one of
    choice / regex / json / json_object (magnet.sampling.StructuredOutput; a fill takes choice
    or regex). The OpenAI routes also take OpenAI's response_format (server/structured_models.py)."""

    model_config = ConfigDict(extra="ignore")  # vLLM's whitespace options and the like

    choice: list[str] | None = Field(None, max_length=MAX_STRUCTURED_CHOICES, description="one of these, exactly")
    regex: str | None = Field(None, max_length=MAX_PATTERN_CHARS, description="a full match of this regex")
    json_: dict[str, Any] | str | None = Field(None, alias="json", description="a JSON schema the text follows")
    json_object: bool | None = Field(None, description="any JSON object")
    grammar: str | None = None
    structural_tag: str | None = None

    @field_validator("grammar", "structural_tag")
    @classmethod
    def refuse_unsupported(cls, value, info):
        if value is not None:
            raise ValueError(f"structured_outputs.{info.field_name} is not supported: use choice, regex, json or "
                             "json_object")
        return value

    def constraint(self) -> StructuredOutput:
        schema = self.json_
        if isinstance(schema, str):
            try:
                json.loads(schema)
            except ValueError as exc:
                raise ValueError(f"structured_outputs.json is not JSON: {exc}") from None
        try:
            return StructuredOutput(choice=tuple(self.choice) if self.choice is not None else None, regex=self.regex,
                                    json=schema if isinstance(schema, str) or schema is None else json.dumps(schema),
                                    json_object=bool(self.json_object))
        except ValueError as exc:
            raise ValueError(f"structured_outputs: {exc}") from None


class SamplingFields(Request, SamplingControls):
    max_tokens: int = Field(64, ge=1, le=MAX_NEW_TOKENS, description="new tokens per gap (infill) or in all")
    temperature: float = Field(0.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP)
    structured_outputs: StructuredOutputs | None = Field(None, description="what the text (infill: each fill) "
                                                                           "must match: choice, regex, json")

    @model_validator(mode="after")
    def constraint_builds(self):
        self.constraint()  # a constraint that cannot be built is a 422 here
        return self

    def constraint(self) -> StructuredOutput | None:
        return None if self.structured_outputs is None else self.structured_outputs.constraint()

    @field_validator("stop", mode="before")
    @classmethod
    def stop_as_list(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def check_stop(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop holds an empty string: remove it")
        return value


class InfillRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["segments"], "not": {"anyOf": [{"required": ["prefix"]}, {"required": ["suffix"]}]}},
        {"anyOf": [{"required": ["prefix"]}, {"required": ["suffix"]}], "not": {"required": ["segments"]}},
    ]})

    prefix: str | None = None
    suffix: str | None = None
    segments: list[str] | None = Field(None, description="s0, s1, ... : fills every gap between them")
    best_of: int | None = Field(None, ge=1, le=MAX_BEST_OF,
                                description="fill n ways (n gap lengths), return the fill under which the "
                                            "whole text is likeliest read left to right")
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="each fill token's log-probability and "
                                                                          "this many likeliest alternatives")

    @model_validator(mode="after")
    def check_shape(self) -> "InfillRequest":
        pair = self.prefix is not None or self.suffix is not None
        if pair == (self.segments is not None):
            raise ValueError("send either 'prefix'/'suffix' or 'segments', not both and not neither")
        if self.segments is not None and len(self.segments) < 2:
            raise ValueError("segments needs at least two strings (one gap between them)")
        if not "".join(self.as_segments()).strip():
            raise ValueError("the context is empty: give a prefix, a suffix or non-empty segments")
        return self

    def as_segments(self) -> list[str]:
        if self.segments is not None:
            return list(self.segments)
        return [self.prefix or "", self.suffix or ""]


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy logprobs shape, one entry per token (echo: the prompt's first, whose
    logprob is null); /v1/completions and /v1/infill (one per fill) answer with it."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]  # the token itself and the `logprobs` likeliest
    text_offset: list[int]  # each token's first character in the text


class InfillResponse(BaseModel):
    id: str = Field(description="the request id (X-Request-Id, generated when the request had none)")
    model: str
    text: str  # the first (or only) fill
    finish_reason: FinishReason  # "length" if any gap hit max_tokens
    fills: list[str]  # one per gap
    finish_reasons: list[FinishReason]
    usage: Usage
    logprobs: list[CompletionLogprobs] | None = None  # one per fill, when asked for (a fill's first token
                                                      # carries the space cut from before its gap)


class GenerateRequest(SamplingFields):
    prompt: Text
    stream: StrictBool = False

    @field_validator("prompt")
    @classmethod
    def check_prompt(cls, value: str) -> str:
        return check_text(value, "prompt")


class GenerateResponse(BaseModel):
    id: str = Field(description="the request id (X-Request-Id, generated when the request had none)")
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage


class GenerateChunk(BaseModel):
    """One server-sent event of a streamed /v1/generate; the last has finish_reason and usage."""

    id: str = Field(description="the request id (X-Request-Id, generated when the request had none)")
    model: str
    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


# --- /health ---------------------------------------------------------------------------


class Backends(BaseModel):
    """Which backend serves each kind of request (null = not served)."""

    embed: str | None = "torch"
    tag: str | None = None
    infill: str | None = "torch"
    generate: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    ready: bool
    model: str | None = None  # null while loading
    adapter: str | None = None
    tasks: list[str] = []  # loaded tagging heads
    backends: Backends = Backends()
    backend_states: dict[str, str] = {}  # backend -> "ready", "loading", "restarting: why", "failed: why", ...
