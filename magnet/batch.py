"""The running decode batch: rows join and leave between steps (continuous batching).

    batch = engine.start_infill(requests, params)   # prefill: the context into a new KV cache
    running.merge(batch)                            # rows join the running batch
    finished = running.step()                       # one token for every open span; done rows leave

Every cached column carries a role and a text position (magnet/masks.py), so one
forward serves rows of different lengths and modes: an infill row is context with
one span per gap, a causal generation is a row whose single span holds the prompt.
Padding has the role PAD, which no real token sees, so rows can be stacked freely:

    cache (B, heads, T, D)   roles (B, T)   positions (B, T)
    merge   [running ; new]  the shorter side padded on the right along T (role PAD)
    step    feed (B, G) tokens, G = most open spans in a row; the cache grows by G columns
    leave   drop the finished rows, then the columns that are PAD in every row left

A row's outputs depend only on its own columns, so a row decodes the same tokens
alone or in a batch, whoever joins or leaves (up to float rounding).
"""
from __future__ import annotations

import logging

import torch

from magnet.decoding import Span, accept, end_rules
from magnet.forward import hidden_states, logits
from magnet.masks import PAD
from magnet.sampler import sample

log = logging.getLogger(__name__)

COMPACT_BELOW = 0.75  # drop dead columns once fewer than this share of them are live


class Decode:
    """One request being decoded: its spans over one or more rows of the batch.

    Subclasses (magnet/decodes.py) turn the finished spans into the request's result,
    and may hand out partial output between steps (`poll`, for streaming)."""

    def __init__(self, spans: list[Span]):
        self.spans = spans
        self.owner = None  # whoever waits for the result (the server's job)
        self.error: Exception | None = None  # what ended this decode alone (`fail`)

    @property
    def done(self) -> bool:
        return all(not span.open for span in self.spans)

    def fail(self, error: Exception) -> None:
        """End this decode with `error`: its spans close, and `outcome` raises it."""
        self.error = error
        for span in self.spans:
            span.finish_reason = span.finish_reason or "error"

    def outcome(self):
        """The result, or the error that ended this decode."""
        if self.error is not None:
            raise self.error
        return self.result()

    @property
    def rows(self) -> set[int]:
        return {span.row for span in self.spans}

    def poll(self) -> list:
        """Output ready since the last poll (called after each step)."""
        return []

    def result(self):
        raise NotImplementedError


class DecodeBatch:
    def __init__(self, model, tokenizer, cache=None, roles: torch.Tensor | None = None,
                 positions: torch.Tensor | None = None, decodes: list[Decode] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.cache = cache  # magnet.kv_cache.GrowingCache, or None while the batch is empty
        self.roles = roles  # (B, T) roles of the cached columns
        self.positions = positions  # (B, T) their text positions
        self.decodes: list[Decode] = decodes or []
        self.pad_id = tokenizer.pad_token_id or 0
        self.eos_id = tokenizer.eos_token_id

    @property
    def rows(self) -> int:
        return 0 if self.roles is None else self.roles.shape[0]

    @property
    def columns(self) -> int:
        return 0 if self.roles is None else self.roles.shape[1]

    def __bool__(self) -> bool:
        return bool(self.decodes)

    # ---- rows join --------------------------------------------------------------------

    def merge(self, other: "DecodeBatch") -> None:
        """Take `other`'s rows (and its cache) into this batch, after the rows already here."""
        if not other.decodes:
            return
        if not self.decodes:
            self.cache, self.roles, self.positions, self.decodes = other.cache, other.roles, other.positions, []
        else:
            offset = self.rows
            for decode in other.decodes:
                for span in decode.spans:
                    span.row += offset
            width = max(self.columns, other.columns)
            for mine, theirs in zip(self.cache.layers, other.cache.layers):
                mine.keys = torch.cat([pad_columns(mine.keys, width, 2), pad_columns(theirs.keys, width, 2)])
                mine.values = torch.cat([pad_columns(mine.values, width, 2), pad_columns(theirs.values, width, 2)])
            self.roles = torch.cat([pad_columns(self.roles, width, 1, PAD), pad_columns(other.roles, width, 1, PAD)])
            self.positions = torch.cat([pad_columns(self.positions, width, 1), pad_columns(other.positions, width, 1)])
        self.decodes.extend(other.decodes)
        other.decodes = []

    # ---- one step ---------------------------------------------------------------------

    def step(self) -> list[Decode]:
        """One token for every open span; returns the decodes that finished (they have left).
        A token choice that raises (a request's own grammar or parameters) fails its decode
        alone; the others go on (a forward that raises is the caller's: it spoils the cache)."""
        fed: list[Span] = []
        for decode in self.decodes:
            try:
                fed += [span for span in decode.spans if span.open and self.choose(span)]
            except Exception as exc:
                log.exception("choosing a token failed: that decode ends")
                decode.fail(exc)
        finished = [d for d in self.decodes if d.done]
        self.drop(finished)
        if fed:
            self.forward(fed)
        return finished

    def choose(self, span: Span) -> bool:
        """Sample the span's next token from its pending logits; True if it stays open."""
        ruled = end_rules(span, span.logits, self.eos_id)
        if ruled is None:
            span.finish_reason = "stop"
            return False
        token = sample(ruled, span.params, span.generator, span.prompt_ids, span.ids)
        return accept(span, token, self.eos_id, self.tokenizer) and span.open

    @torch.inference_mode()
    def forward(self, fed: list[Span]) -> None:
        """Feed each span's last token at its next position; its new logits become pending."""
        slots, taken = [], [0] * self.rows  # column of each span in the (B, G) step: its rank in its row
        for span in fed:
            slots.append(taken[span.row])
            taken[span.row] += 1
        device = self.roles.device
        shape = (self.rows, max(taken))
        ids = torch.full(shape, self.pad_id, dtype=torch.long, device=device)
        roles = torch.full(shape, PAD, dtype=torch.long, device=device)
        positions = torch.zeros(shape, dtype=torch.long, device=device)
        for span, slot in zip(fed, slots):
            ids[span.row, slot] = span.ids[-1]
            roles[span.row, slot] = span.role
            positions[span.row, slot] = span.next_position
            span.next_position += 1
        hidden = hidden_states(self.model, ids, roles, positions, self.cache, self.roles, self.positions)
        self.roles = torch.cat([self.roles, roles], dim=1)
        self.positions = torch.cat([self.positions, positions], dim=1)
        rows = torch.tensor([span.row for span in fed], device=device)
        cols = torch.tensor(slots, device=device)
        for span, row_logits in zip(fed, logits(self.model, hidden[rows, cols])):  # (n_fed, V)
            span.logits = row_logits

    # ---- rows leave -------------------------------------------------------------------

    def drop(self, decodes: list[Decode]) -> None:
        """Remove these decodes' rows (finished, or their caller left)."""
        if not decodes:
            return
        gone = set().union(*(d.rows for d in decodes))
        self.decodes = [d for d in self.decodes if d not in decodes]
        if not self.decodes:
            self.cache = self.roles = self.positions = None
            return
        keep = [row for row in range(self.rows) if row not in gone]
        renumber = {old: new for new, old in enumerate(keep)}
        for decode in self.decodes:
            for span in decode.spans:
                span.row = renumber[span.row]
        index = torch.tensor(keep, device=self.roles.device)
        self.cache.batch_select_indices(index)
        self.roles, self.positions = self.roles[index], self.positions[index]
        self.compact()

    def compact(self) -> None:
        """Drop the columns no row uses any more (rows that left, padding of merges)."""
        live = (self.roles != PAD).any(dim=0)  # (T,)
        if live.sum() >= COMPACT_BELOW * self.columns:
            return
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, live], layer.values[:, :, live]
        self.roles, self.positions = self.roles[:, live], self.positions[:, live]


def pad_columns(t: torch.Tensor, width: int, dim: int, value: int = 0) -> torch.Tensor:
    """`t` padded with `value` on the right along `dim` to `width`."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t, torch.full(shape, value, dtype=t.dtype, device=t.device)], dim=dim)


def run_to_end(batch: DecodeBatch) -> None:
    """Step until every decode of the batch has finished."""
    while batch:
        batch.step()
