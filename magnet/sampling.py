"""Decoding parameters and results shared by every generation backend (no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field


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


# /v1/infill's defaults: greedy fills must not loop ("hold hold hold", a sentence twice).
# A mild penalty on the fill's own repeats; the context stays free to be echoed (names).
INFILL_DEFAULTS = SamplingParams(frequency_penalty=0.5)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (stop string, EOS, end of span) or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class InfillCompletion:
    """One fill per gap of `segments` (s0 ▢ s1 ▢ s2 ... has len(segments)-1 gaps)."""

    fills: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int

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
