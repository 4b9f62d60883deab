"""Prefill once, then decode span tokens one by one against the KV cache.

Infill and plain generation are one loop. A *span* is a run of tokens being
generated: in hybrid mode one per gap (span k sees all context and its own
earlier tokens), in causal mode a single span that already holds the prompt.
Each step feeds one new token per still-open span (B, G) and never re-encodes
the context:

    prefill:  context (B, Tc)  --bidirectional/causal mask-->  cache, first logits (B, G, V)
    decode:   tokens  (B, G)   --span mask vs. cache------->   cache grows by G, logits (B, G, V)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from magnet.errors import Stopped
from magnet.forward import hidden_states, logits
from magnet.masks import PAD
from magnet.sampler import sample
from magnet.sampling import SamplingParams


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
    text: str = ""  # decoded ids, cut at a stop string

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
    if token == eos_id or (span.end_token is not None and token == span.end_token):
        span.finish_reason = "stop"
        return False
    span.ids.append(token)
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


def decode_spans(
    model,
    tokenizer,
    cache,
    cached_roles: torch.Tensor,  # (B, Tc) roles of what the cache holds
    cached_positions: torch.Tensor,  # (B, Tc)
    first_logits: list[torch.Tensor],  # per span: (V,) logits that predict its first token
    spans: list[Span],
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[list[tuple[int, int]]]:
    """Decode every span to its end; yield [(span index, kept token)] after each step.
    Raises Stopped when `should_stop()` turns true (the caller has gone)."""
    batch = cached_roles.shape[0]
    width = max(sum(1 for s in spans if s.row == b) for b in range(batch))  # G
    slot = slots_by_row(spans, batch)
    pad_id = tokenizer.pad_token_id or 0
    eos_id = tokenizer.eos_token_id
    device = cached_roles.device
    step_logits = dict(enumerate(first_logits))
    while True:
        if should_stop is not None and should_stop():
            raise Stopped("the caller left")
        fed: dict[int, int] = {}
        events = []
        for i, span in enumerate(spans):
            if not span.open:
                continue
            ruled = end_rules(span, step_logits[i], eos_id)
            if ruled is None:
                span.finish_reason = "stop"
                continue
            token = sample(ruled, span.params, span.generator, span.prompt_ids, span.ids)
            if accept(span, token, eos_id, tokenizer):
                events.append((i, token))
                if span.open:
                    fed[i] = token
        if events:
            yield events
        if not fed:
            return
        ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
        roles = torch.full((batch, width), PAD, dtype=torch.long, device=device)
        positions = torch.zeros((batch, width), dtype=torch.long, device=device)
        for i, token in fed.items():
            span = spans[i]
            ids[span.row, slot[i]] = token
            roles[span.row, slot[i]] = span.role
            positions[span.row, slot[i]] = span.next_position
            span.next_position += 1
        hidden = hidden_states(model, ids, roles, positions, cache, cached_roles, cached_positions)
        cached_roles = torch.cat([cached_roles, roles], dim=1)
        cached_positions = torch.cat([cached_positions, positions], dim=1)
        rows = torch.tensor([spans[i].row for i in fed], device=device)
        cols = torch.tensor([slot[i] for i in fed], device=device)
        new_logits = logits(model, hidden[rows, cols])  # (n_fed, V)
        step_logits = dict(zip(fed, new_logits))


def slots_by_row(spans: list[Span], batch: int) -> list[int]:
    """Column of each span in the (B, G) step tensor: its rank within its row."""
    seen = [0] * batch
    slots = []
    for span in spans:
        slots.append(seen[span.row])
        seen[span.row] += 1
    return slots
