"""Bodies of /v1/chat/completions (OpenAI's shapes, text only).

    request:  {"model", "messages": [{"role", "content"}], "max_tokens" | "max_completion_tokens",
               "temperature", "top_p", "seed", "stop", "n", "stream", "stream_options": {"include_usage"},
               + SamplingControls (top_k, min_p, repetition_penalty, frequency/presence_penalty)}
    answer:   {"id": "chatcmpl-...", "object": "chat.completion", "created", "model",
               "choices": [{"index": 0, "message": {"role": "assistant", "content"}, "finish_reason"}],
               "usage"}
    stream:   "chat.completion.chunk" events whose choices carry a `delta` ({"role"} first, then
              {"content"} pieces, the last with finish_reason), then `data: [DONE]`.

`n` choices are n independent samples (indices 0..n-1; streamed, their chunks interleave).
Tools and images are refused with a 422 naming the field. `logprobs` (+ `top_logprobs`)
adds each generated token's log-probability (server/logprobs.py).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from magnet.protocol import MAX_NEW_TOKENS, FinishReason, TextChecked, Usage
from magnet.sampling import MAX_LOGPROBS
from magnet.server.openai_models import GenerationOptions

# The template's own roles; "developer" (OpenAI's newer name for system) is rendered as "system".
CHAT_ROLES = ("system", "developer", "user", "assistant")


class ChatMessage(TextChecked):
    model_config = ConfigDict(extra="ignore")  # `name` and the like: not part of the prompt

    role: Literal[CHAT_ROLES]
    content: str  # a list of text parts arrives joined into one string

    @field_validator("content", mode="before")
    @classmethod
    def join_text_parts(cls, value):
        """[{"type": "text", "text": ...}, ...] -> their texts joined; other part types are refused."""
        if not isinstance(value, list):
            return value
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"only text parts ({{'type': 'text', 'text': ...}}) are supported, not {kind!r}")
        return "".join(part["text"] for part in value)

    def for_template(self) -> dict[str, str]:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.content}


class ChatRequest(GenerationOptions):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS,
                                   description="null: whatever room the context leaves (vLLM's default)")
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description="OpenAI's newer name")
    best_of: int | None = None
    logprobs: StrictBool | None = Field(None, description="each generated token's log-probability")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="with logprobs: this many alternatives")
    tools: list[Any] | None = None
    functions: list[Any] | None = None  # OpenAI's older name for tools
    function_call: Any = None  # and for tool_choice: only "none" asks for nothing unsupported

    @field_validator("best_of")
    @classmethod
    def refuse_best_of(cls, value):
        if (value or 1) > 1:
            raise ValueError("best_of applies to infill (/v1/completions with a suffix): omit it")
        return value

    @model_validator(mode="after")
    def top_logprobs_need_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true: set it, or omit top_logprobs")
        return self

    @property
    def logprob_count(self) -> int | None:
        """SamplingParams.logprobs: None (not asked), else the alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("tools", "functions", "function_call")
    @classmethod
    def refuse_unsupported(cls, value, info):
        if value and value != "none":
            raise ValueError(f"{info.field_name} is not supported: omit it")
        return value

    @property
    def requested_max_tokens(self) -> int | None:
        """max_completion_tokens, else max_tokens, else None (the route fills the context)."""
        return self.max_completion_tokens or self.max_tokens



class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None  # the token's UTF-8 bytes


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]  # the `top_logprobs` likeliest tokens at this position


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None  # one per generated token


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, str]  # {"role": "assistant"} first, then {"content": piece}; {} may end it
    logprobs: ChatLogprobs | None = None  # the tokens of this piece (logprobs=true)
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]  # empty in the usage chunk (stream_options.include_usage)
    usage: Usage | None = None
