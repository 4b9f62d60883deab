"""The rules of one span under construction: when it ends, what it keeps.

Infill and plain generation decode the same way. A *span* is a run of tokens
being generated: in hybrid mode one per gap (span k sees all context and its own
earlier tokens), in causal mode a single span that already holds the prompt.
The running batch (magnet/batch.py) feeds one new token per open span each step
and never re-encodes the context:

    prefill:  context (B, Tc)  --bidirectional/causal mask-->  cache, first logits per span
    step:     tokens  (B, G)   --span mask vs. cache------->   cache grows by G, logits per span
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from magnet.logprobs import token_logprob
from magnet.sampling import SamplingParams, TokenLogprob
from magnet.structured import SpanGrammar


@dataclass
class Span:
    """One span under construction in one row of the batch."""

    row: int
    role: int  # span id k >= 1
    next_position: int  # text position of the next token
    end_token: int | None  # the first token after the gap: predicting it ends the span
    params: SamplingParams
    generator: torch.Generator | None = None
    # Infill gaps: a fill has at least one token, and ends once the model gives the text
    # after the gap at least `end_threshold` probability (0: only when that token is chosen).
    min_tokens: int = 0
    end_threshold: float = 0.0
    prompt_ids: list[int] = field(default_factory=list)  # what repetition_penalty counts besides the output
    ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    # A generation that ended on EOS generated it: a token of the output's usage and logprobs,
    # not of its text (vLLM counts it so, and lm-eval's scoring reads its logprob as the last)
    eos_generated: bool = False
    text: str = ""  # decoded ids, cut at a stop string
    logits: torch.Tensor | None = None  # (V,) pending: they predict the next token
    logprobs: list[TokenLogprob] | None = None  # one per kept token, when params.logprobs is set
    prompt_logprobs: list[TokenLogprob] | None = None  # the prompt's, read at prefill (params.prompt_logprobs)
    grammar: SpanGrammar | None = None  # params.structured, compiled for this span (magnet/structured.py)

    def __post_init__(self):
        if self.params.logprobs is not None:
            self.logprobs = []
        if self.params.max_tokens == 0:  # scoring the prompt only (echo): nothing to generate
            self.finish_reason = "length"

    @property
    def open(self) -> bool:
        return self.finish_reason is None


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def end_rules(span: Span, logits_row: torch.Tensor, eos_id: int | None) -> torch.Tensor | None:
    """Apply the span's end rules before sampling: None if the span ends here, else the
    (possibly edited) logits. Too early, the end tokens are masked out."""
    ends = [t for t in (span.end_token, eos_id) if t is not None]
    if span.grammar is not None:  # only what can continue the match; the ends once it is complete
        logits_row, must_end = span.grammar.mask(logits_row, ends)
        if must_end:
            return None
        if not span.grammar.complete:  # nothing can end the span yet: the rules below do not apply
            return logits_row
    if len(span.ids) < span.min_tokens:
        logits_row = logits_row.clone()
        logits_row[ends] = float("-inf")
        return logits_row
    if span.end_threshold > 0 and span.end_token is not None:
        if torch.softmax(logits_row, dim=-1)[span.end_token] >= span.end_threshold:
            return None
    return logits_row


def accept(span: Span, token: int, eos_id: int | None, tokenizer) -> bool:
    """Record the sampled token; close the span when it ends. True if the token was kept."""
    may_end = span.grammar is None or span.grammar.complete  # else an end token is text the match needs
    if may_end and ((token == eos_id and not span.params.ignore_eos) or token == span.end_token):
        span.finish_reason = "stop"
        if token == eos_id and span.end_token is None:  # a generation's EOS (a fill's end is not output)
            span.eos_generated = True
            if span.logprobs is not None:
                span.logprobs.append(token_logprob(span.logits, token, span.params.logprobs))
        return False
    span.ids.append(token)
    if span.grammar is not None:
        span.grammar.accept(token)
    if span.logprobs is not None:  # span.logits are still the raw ones that predicted `token`
        span.logprobs.append(token_logprob(span.logits, token, span.params.logprobs))
    span.text = tokenizer.decode(span.ids, skip_special_tokens=True)
    cut = first_stop(span.text, span.params.stop)
    if cut is not None:
        span.text = span.text[:cut]
        span.finish_reason = "stop"
    elif len(span.ids) >= span.params.max_tokens:
        span.finish_reason = "length"
    return True


def first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None
