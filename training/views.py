"""The masked-and-spanned view x^m of one training example (paper §3.3).

    seq       = [anchor] t1 ... tn [EOS]          physical order = text order
    spans     = up to `max_spans` runs of span tokens (roles 1, 2), the rest context (role 0)
    MNTP      = 20% of context tokens selected: 80% -> mask token, 10% -> random, 10% kept;
                the output at l-1 predicts the original token at l (context predictors only)
    context   = bidirectional (the paper), or read left to right (`context_role` LEFT_CONTEXT):
                then only span tokens read the text after them, MNTP's context labels are
                clean next-token labels, and `mntp_view_rate` of the examples are MNTP-only
                bidirectional views (the reading embeddings and tags use). With `gap_role`
                (causal_gap, causal_gap_hidden) the token before each span reads all the
                context, so the span's first token is predicted seeing the text after it. Under
                causal_gap (role CONTEXT) the context after it reads that token, so MNTP labels
                after the first one are dropped (a token there could read its label through
                it); under causal_gap_hidden (role GAP_PREDICTOR) it does not, and all stay
    MSG       = each span token is predicted by the output before it; the span's last
                token predicts the token after the span (how decoding learns to stop)
    causal    = with probability `causal_rate` the whole sequence is one span: plain
                next-token prediction, which keeps the model a generator

Positions follow the text, except that the distance from a span's start to the
text after it may be stretched (m * U(1, 1+j) for a span of m tokens): never
shorter than the span, so the text after a span never shares its positions.
j = 0 (the default) keeps exact positions. The range of distances seen is
recorded in the adapter's manifest (`gap_distance`) and serving keeps within it.

With probability `trailing_rate` the last span runs to the end of the text, so
the token after it is EOS: how a fill at the end of a text learns to stop.
With probability `sentence_rate` the first span is one whole sentence (from the
token after a sentence end to the next sentence end), the unit users most often
leave out: "fill the missing sentence" is then seen with exact boundaries.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from magnet.masks import CONTEXT, CONTEXT_ROLES, LEFT_CONTEXT

MNTP, MSG = 0, 1


@dataclass
class View:
    input_ids: list[int]  # after MNTP corruption
    roles: list[int]
    positions: list[int]
    predictors: list[int] = field(default_factory=list)  # slot whose output predicts a label
    labels: list[int] = field(default_factory=list)  # the original token it must predict
    objectives: list[int] = field(default_factory=list)  # MNTP or MSG per label
    causal: bool = False  # one span end to end: read exactly as the base model reads text


@dataclass(frozen=True)
class ViewSpec:
    anchor_id: int
    eos_id: int
    mask_id: int
    vocab_size: int
    mask_rate: float
    max_spans: int
    span_range: tuple[int, int]
    causal_rate: float
    gap_jitter: float
    trailing_rate: float = 0.0
    special_ids: frozenset = frozenset()
    sentence_rate: float = 0.0
    sentence_end_ids: frozenset = frozenset()  # tokens that end a sentence ('.', '!', '?', '."' ...)
    context_role: int = CONTEXT  # role of a hybrid view's context: CONTEXT or LEFT_CONTEXT (magnet.masks)
    gap_role: int | None = None  # role of the token before each span, if not context_role (magnet.masks.GAP_PREDICTOR_ROLES)
    mntp_view_rate: float = 0.0  # LEFT_CONTEXT only: share of MNTP-only bidirectional views


def make_view(tokens: list[int], spec: ViewSpec, rng: random.Random) -> View:
    seq = [spec.anchor_id] + tokens + [spec.eos_id]
    if rng.random() < spec.causal_rate:
        return causal_view(seq)
    if spec.context_role == LEFT_CONTEXT and rng.random() < spec.mntp_view_rate:
        return mntp_view(seq, spec, rng)
    roles = [spec.context_role] * len(seq)
    spans = choose_spans(seq, spec, rng)
    for k, (start, end) in enumerate(spans, start=1):
        roles[start : end + 1] = [k] * (end + 1 - start)
        if spec.gap_role is not None:  # the output predicting the span's first token reads all the context
            roles[start - 1] = spec.gap_role
    view = View(list(seq), roles, jittered_positions(len(seq), spans, spec.gap_jitter, rng))
    # Bidirectional context: MNTP on corrupted tokens. Left-to-right context: its labels are
    # clean next-token labels (the pretrained reading kept, and the generator with it).
    add_mntp(view, seq, spec, rng, corrupt=spec.context_role == CONTEXT)
    if spec.gap_role == CONTEXT and spans:  # left-to-right context reads a CONTEXT gap predictor
        drop_labels_after(view, spans[0][0] - 1, MNTP)
    add_msg(view, seq, spans)
    return view


def drop_labels_after(view: View, slot: int, objective: int) -> None:
    """Drop `objective`'s labels predicted after `slot`: a left-to-right context token there
    reads the token at `slot`, which (causal_gap) read the whole text, its next token too."""
    kept = [i for i, (p, o) in enumerate(zip(view.predictors, view.objectives)) if o != objective or p < slot]
    view.predictors = [view.predictors[i] for i in kept]
    view.labels = [view.labels[i] for i in kept]
    view.objectives = [view.objectives[i] for i in kept]


def mntp_view(seq: list[int], spec: ViewSpec, rng: random.Random) -> View:
    """Every token bidirectional CONTEXT, no spans: MNTP alone (LLM2Vec's objective), which
    trains the reading /v1/embed and /v1/tag use when hybrid views read their context causally."""
    n = len(seq)
    view = View(list(seq), [CONTEXT] * n, list(range(n)))
    add_mntp(view, seq, spec, rng, corrupt=True)
    return view


def causal_view(seq: list[int]) -> View:
    n = len(seq)
    return View(list(seq), [1] * n, list(range(n)), list(range(n - 1)), seq[1:], [MSG] * (n - 1), causal=True)


def choose_spans(seq: list[int], spec: ViewSpec, rng: random.Random) -> list[tuple[int, int]]:
    """Up to max_spans non-adjacent [start, end] runs inside slots 1..n-2 (not anchor, not EOS)."""
    n = len(seq)
    low, high = spec.span_range
    spans: list[tuple[int, int]] = []
    if rng.random() < spec.trailing_rate:  # a span that ends the text: EOS follows it
        length = min(rng.randint(low, high), max(1, (n - 2) // 2))
        spans.append((n - 1 - length, n - 2))
    elif spec.sentence_rate and rng.random() < spec.sentence_rate and (sentences := whole_sentences(seq, spec)):
        spans.append(rng.choice(sentences))
    for _ in range(rng.randint(1, spec.max_spans) - len(spans)):
        length = rng.randint(low, high)
        for _attempt in range(8):
            free = n - 1 - length  # last allowed start so that end <= n - 2 (EOS stays context)
            if free < 1:
                length = max(1, (n - 2) // 2)
                continue
            start = rng.randint(1, free)
            end = start + length - 1
            # keep one context token between spans so each span's end is a context token
            if all(end + 1 < s or start > e + 1 for s, e in spans):
                spans.append((start, end))
                break
    return sorted(spans)


def whole_sentences(seq: list[int], spec: ViewSpec) -> list[tuple[int, int]]:
    """[start, end] of every sentence inside slots 1..n-2 with a length in span_range.

    A sentence starts after a sentence-end token and ends with the next one; the
    text before the first end is skipped (a window may cut a sentence in half).
    """
    low, high = spec.span_range
    ends = [j for j in range(1, len(seq) - 1) if seq[j] in spec.sentence_end_ids]
    return [(a + 1, b) for a, b in zip(ends, ends[1:]) if low <= b - a <= high]


def gap_distance_range(span_range: tuple[int, int], jitter: float) -> tuple[int, int]:
    """The span-start-to-suffix distances training shows (what serving may reserve)."""
    low, high = span_range
    return low, max(high, round(high * (1 + jitter)))


def jittered_positions(n: int, spans: list[tuple[int, int]], jitter: float, rng: random.Random) -> list[int]:
    positions, cursor, ends = [], 0, {end: start for start, end in spans}
    span_start_pos = 0
    for i in range(n):
        if any(start == i for start, _ in spans):
            span_start_pos = cursor
        positions.append(cursor)
        cursor += 1
        if i in ends:
            length = i - ends[i] + 1
            distance = max(length, round(length * rng.uniform(1, 1 + jitter)))
            cursor = span_start_pos + distance
    return positions


def add_mntp(view: View, seq: list[int], spec: ViewSpec, rng: random.Random, corrupt: bool = True) -> None:
    """Label `mask_rate` of the context tokens, each predicted by the output before it; with
    `corrupt`, 80% of them become the mask token and 10% a random one (10% kept)."""
    is_context = lambda j: view.roles[j] in CONTEXT_ROLES  # noqa: E731
    candidates = [j for j in range(1, len(seq) - 1) if is_context(j) and seq[j] not in spec.special_ids]
    chosen = sorted(rng.sample(candidates, round(spec.mask_rate * len(candidates))))
    for j in chosen:
        draw = rng.random()
        if corrupt and draw < 0.8:
            view.input_ids[j] = spec.mask_id
        elif corrupt and draw < 0.9:
            view.input_ids[j] = rng.randrange(spec.vocab_size)
        if is_context(j - 1):  # after a span, MSG's end label covers it
            view.predictors.append(j - 1)
            view.labels.append(seq[j])
            view.objectives.append(MNTP)


def add_msg(view: View, seq: list[int], spans: list[tuple[int, int]]) -> None:
    for start, end in spans:
        for j in range(start, end + 2):  # span tokens, then the token after the span
            view.predictors.append(j - 1)
            view.labels.append(seq[j])
            view.objectives.append(MSG)
