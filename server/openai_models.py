"""Bodies of the OpenAI-compatible routes (/v1/embeddings, /v1/completions, /v1/models);
/v1/chat/completions adds its own in server/chat_models.py.

Only what the official SDK sends and reads; unknown fields are ignored (the
SDK adds new ones over time), unsupported options are refused with a 422.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from magnet.protocol import (MAX_BEST_OF, CompletionLogprobs, MAX_CHOICES, MAX_INPUTS, MAX_NEW_TOKENS, MAX_STOP, Backends, EncodingFormat, SamplingControls, TextChecked, Usage,
                             as_list, check_texts)
from magnet.server.token_inputs import TextsOrIds, as_id_lists, check_inputs, has_ids, refuse_dimensions, refuse_mixed_inputs
from magnet.sampling import MAX_LOGPROBS
from magnet.server.structured_models import StructuredFields


class OpenAIRequest(TextChecked):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # None, or an id of server/model_ids.py (else a 404)

    @model_validator(mode="before")
    @classmethod
    def null_means_the_default(cls, data):
        """OpenAI's API and SDK take null for most fields (`"temperature": null`, sent by code that
        passes its own None through): null on a field with a default is that default."""
        if not isinstance(data, dict):
            return data
        defaulted = {field.alias or name for name, field in cls.model_fields.items()
                     if not field.is_required() and field.default is not None}
        return {key: value for key, value in data.items() if value is not None or key not in defaulted}


class EmbeddingsRequest(OpenAIRequest):
    input: TextsOrIds = Field(description="a text, a list of texts, or this model's token ids (a list, or a list "
                                          "of lists: server/token_inputs.py); up to max_client_batch_size inputs")
    encoding_format: EncodingFormat = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def one_kind_of_input(cls, value):
        return refuse_mixed_inputs(value, "input")

    @field_validator("input")
    @classmethod
    def check_input(cls, value):
        return check_inputs(value, "input")  # the count: server/large_inputs.py (413)

    @field_validator("dimensions")
    @classmethod
    def check_dimensions(cls, value):
        return refuse_dimensions(value)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str = base64 of little-endian float32


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False  # one last event with no choices and the usage


class StreamUsage:
    """The usage a streamed answer ends with (stream_options.include_usage): the prompt counted
    once, every choice's tokens."""

    def __init__(self):
        self.prompt_tokens = self.completion_tokens = 0

    def add(self, chunk) -> None:
        """Count a StreamChunk (a choice's last one carries its usage)."""
        if chunk.finish_reason is not None:
            self.prompt_tokens = chunk.prompt_tokens
            self.completion_tokens += chunk.completion_tokens

    @property
    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)


class GenerationOptions(OpenAIRequest, SamplingControls, StructuredFields):
    """What /v1/completions and /v1/chat/completions share: OpenAI's sampling fields (OpenAI's
    defaults: temperature 1) plus vLLM's (SamplingControls), and structured output
    (response_format, structured_outputs: server/structured_models.py)."""

    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**63)
    logit_bias: dict[str, float] | None = None
    stop: str | list[str] | None = None
    stream: StrictBool = False
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices per prompt: independent samples, decoded "
                                                        "side by side (with a seed, choice k uses seed + k)")
    user: str | None = None
    stream_options: StreamOptions | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @field_validator("logit_bias")
    @classmethod
    def refuse_logit_bias(cls, value):
        if value:
            raise ValueError("logit_bias is not supported: omit it")
        return value

    @field_validator("stop")
    @classmethod
    def check_stop(cls, value):
        stops = [] if value is None else as_list(value)
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"stop takes at most {MAX_STOP} non-empty strings")
        return value

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple([] if self.stop is None else as_list(self.stop))

class CompletionsRequest(GenerationOptions):
    prompt: TextsOrIds = Field(description="a text, a list of texts, or this model's token ids (a list, or a list "
                                           "of lists: server/token_inputs.py)")
    suffix: str | None = Field(None, description="text after the gap: the completion becomes an infill")
    max_tokens: int = Field(16, ge=0, le=MAX_NEW_TOKENS, description="0 only with echo: score the prompt")
    best_of: int | None = Field(None, ge=1, le=MAX_BEST_OF, description="with suffix: infill candidates")
    echo: StrictBool = Field(False, description="the prompt before the completion (with logprobs: its tokens' too)")
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS,
                                 description="each token's log-probability and this many likeliest alternatives")

    @field_validator("prompt")
    @classmethod
    def check_prompt(cls, value):
        check_inputs(value, "prompt", limit=MAX_INPUTS)
        if has_ids(value) and len(as_id_lists(value)) > MAX_INPUTS:
            raise ValueError(f"send at most {MAX_INPUTS} prompts")
        return value

    @model_validator(mode="after")
    def bounded_choices(self):
        if len(self.prompts) * self.n > MAX_INPUTS:
            raise ValueError(f"prompts x n is {len(self.prompts) * self.n}; at most {MAX_INPUTS} choices per request")
        return self

    @model_validator(mode="after")
    def best_of_needs_suffix(self):
        if (self.best_of or 1) > 1 and self.suffix is None:
            raise ValueError("best_of applies to infill (a request with suffix): omit it or send a suffix")
        return self

    @model_validator(mode="after")
    def echo_rules(self):
        if self.echo and self.suffix is not None:
            raise ValueError("echo does not apply to infill (a request with suffix): omit one of them")
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens 0 generates nothing: it needs echo=true (to score the prompt), else set it >= 1")
        return self

    def logprob_params(self) -> dict:
        """SamplingParams fields: logprobs for what is generated, and with echo for the prompt
        (echo alone with max_tokens 0 still scores it: that is how a backend runs without generating)."""
        prompt = self.logprobs if self.logprobs is not None or self.max_tokens > 0 else 0
        return {"logprobs": self.logprobs, "prompt_logprobs": prompt if self.echo else None}

    @property
    def prompts(self) -> list[str]:
        """The prompts (id lists until the route has decoded them: server/token_inputs.py)."""
        return as_id_lists(self.prompt) if has_ids(self.prompt) else as_list(self.prompt)


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class CompletionsResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str  # the served id: the default model's name, a named adapter's NAME, or the base's name
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "magnet"
    aliases: list[str]  # other ids accepted as `model` for the same model
    backends: Backends  # which backend serves embed, tag, infill and generate
    dtypes: dict[str, str] = {}  # the dtype each backend runs it in: {"torch": "bfloat16", "vllm": "bfloat16"}
    engine: str  # the loaded weights: "<base>+<adapter folder>", or the base's name
    manifest: dict | None = None  # the adapter's magnet.json as loaded; null for the base


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
