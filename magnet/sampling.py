"""Decoding parameters and results shared by every generation backend (no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StructuredOutput:
    """What the text must be (exactly one field): vLLM's `structured_outputs`, and what
    OpenAI's `response_format` json_object / json_schema become. magnet/structured.py applies it
    on the torch path; vLLM applies its own."""

    choice: tuple[str, ...] | None = None  # one of these strings, exactly
    regex: str | None = None  # a full match of this regular expression
    json: str | None = None  # a JSON value valid under this JSON schema (the schema as JSON text)
    json_object: bool = False  # any JSON object

    def __post_init__(self):
        given = [self.choice is not None, self.regex is not None, self.json is not None, self.json_object]
        if sum(given) != 1:
            raise ValueError("give exactly one of choice, regex, json and json_object")
        if self.choice is not None and (not self.choice or not all(self.choice)):
            raise ValueError("choice needs at least one non-empty string")


@dataclass(frozen=True)
class SamplingParams:
    """vLLM's names and meanings; magnet/sampler.py applies them on the torch path."""

    max_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = all tokens
    min_p: float = 0.0  # drop tokens below min_p x the most likely token's probability
    repetition_penalty: float = 1.0  # > 1 discourages tokens of the prompt and the output
    frequency_penalty: float = 0.0  # subtracted per earlier occurrence in the output
    presence_penalty: float = 0.0  # subtracted once for a token already in the output
    seed: int | None = None
    stop: tuple[str, ...] = ()
    best_of: int = 1  # infill: fill n ways (each a different gap length), keep the likeliest whole text
    ignore_eos: bool = False  # EOS does not end the text (benchmarks); a gap still ends where its suffix starts
    # Log-probabilities (TokenLogprob): None = not recorded; k = each token's own plus the k
    # likeliest alternatives. `prompt_logprobs` scores the prompt's tokens (echo); with it,
    # max_tokens may be 0 (score only, generate nothing).
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    structured: StructuredOutput | None = None  # what the text (an infill: each fill) must match


MAX_LOGPROBS = 20  # alternatives per token at most (vLLM's max_logprobs default, OpenAI's top_logprobs bound)


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability under the model's raw next-token distribution: the
    log-softmax of the logits before penalties, temperature, top-k/top-p/min-p and end rules
    (what vLLM returns by default, `logprobs_mode="raw_logprobs"`), so a sampled text is
    scored the same whatever the sampling settings."""

    token: int
    logprob: float | None  # None: the prompt's first token (nothing before it predicts it)
    top: tuple[tuple[int, float], ...] = ()  # the k likeliest (token id, logprob), likeliest first


# /v1/infill's defaults: greedy fills must not loop ("hold hold hold", a sentence twice).
# A mild penalty on the fill's own repeats; the context stays free to be echoed (names).
INFILL_DEFAULTS = SamplingParams(frequency_penalty=0.5)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (stop string, EOS, end of span) or "length"
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None  # one per generated token (params.logprobs set)
    prompt_logprobs: list[TokenLogprob] | None = None  # one per prompt token (params.prompt_logprobs set)


def completion_of(chunks: list["StreamChunk"]) -> Completion:
    """A whole completion from its stream (at least the last chunk, which has the usage)."""
    last = chunks[-1]
    logprobs = [lp for c in chunks for lp in c.logprobs or ()] if any(c.logprobs is not None for c in chunks) else None
    prompt_logprobs = next((c.prompt_logprobs for c in chunks if c.prompt_logprobs is not None), None)
    return Completion("".join(c.text for c in chunks), last.finish_reason, last.prompt_tokens,
                      last.completion_tokens, logprobs, prompt_logprobs)


@dataclass
class InfillCompletion:
    """One fill per gap of `segments` (s0 ▢ s1 ▢ s2 ... has len(segments)-1 gaps)."""

    fills: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[list[TokenLogprob]] | None = None  # per gap, one per fill token (params.logprobs set)

    @property
    def text(self) -> str:
        return self.fills[0]

    @property
    def finish_reason(self) -> str:
        return "length" if "length" in self.finish_reasons else "stop"


@dataclass
class StreamChunk:
    """One streamed piece; the last chunk has finish_reason set and the usage."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict = field(default_factory=dict)
    logprobs: list[TokenLogprob] | None = None  # the tokens decoded since the previous chunk
    prompt_logprobs: list[TokenLogprob] | None = None  # on the first chunk that carries them
