"""The attention mask is data: one function builds it from per-token roles.

Every token carries a role (an int):
    PAD           (-1)  padding: seen by no real token
    CONTEXT        (0)  sees every context token, in both directions
    LEFT_CONTEXT  (-2)  context read left to right: sees the context tokens at or before its
                        own text position (the base model's pretrained reading), never spans
                        and never a GAP_PREDICTOR
    GAP_PREDICTOR (-3)  the token before a gap under "causal_gap_hidden": reads every context
                        token like CONTEXT, and is read by spans and CONTEXT tokens, not by
                        LEFT_CONTEXT ones (it read their next tokens)
    span k        (>=1) sees every context token (both kinds, whole) and the tokens of span k
                        at or before its own text position; never later span tokens, never
                        other spans

The three attention modes of MAGNET are three ways of filling the roles:
    bidirectional   every real token is CONTEXT
    causal          every real token belongs to span 1 (so causal is "all span")
    hybrid          context around one or more spans (paper Fig. 2c/2d); its context is
                    CONTEXT (the paper) or LEFT_CONTEXT (an adapter trained so: the context
                    keeps its causal reading and only the spans read the text after them).
                    With LEFT_CONTEXT the first token of a fill is predicted by the token
                    before the gap, which then reads only the text before it; the reading
                    "causal_gap" makes that one token CONTEXT (`gap_predictor_role`), so the
                    fill's first token sees the text after the gap too. The context after the
                    gap then reads a token that read it, so training drops its next-token
                    labels; "causal_gap_hidden" makes that token GAP_PREDICTOR instead, which
                    the context does not read, so every context label stays

Order inside a span follows position ids (the text order), not the physical
slot, so span tokens may sit anywhere in the tensor (for example after the
context, as the KV-cache decoder places them).

Training and serving both call `attention_mask`; the model forward receives the
result as its `attention_mask` argument. No model class is subclassed.
"""
from __future__ import annotations

from enum import Enum

import torch

PAD = -1
CONTEXT = 0
LEFT_CONTEXT = -2
GAP_PREDICTOR = -3
CONTEXT_ROLES = (CONTEXT, LEFT_CONTEXT, GAP_PREDICTOR)  # every context role: spans read them all


class AttentionMode(str, Enum):
    CAUSAL = "causal"
    BIDIRECTIONAL = "bidirectional"
    HYBRID = "hybrid"
    LEFT_CONTEXT = "left_context"  # every real token LEFT_CONTEXT: a hybrid prefill of causal context
    LEFT_CONTEXT_GAP = "left_context_gap"  # the same, but the token before each gap reads all the context
    LEFT_CONTEXT_HIDDEN_GAP = "left_context_hidden_gap"  # that token read by the fill only (GAP_PREDICTOR)


# How the context of a hybrid view is read, as an adapter's manifest names it -> its prefill mode
READING_MODES = {"bidirectional": AttentionMode.BIDIRECTIONAL, "causal": AttentionMode.LEFT_CONTEXT,
                 "causal_gap": AttentionMode.LEFT_CONTEXT_GAP,
                 "causal_gap_hidden": AttentionMode.LEFT_CONTEXT_HIDDEN_GAP}


def context_mode(reading: str) -> "AttentionMode":
    """The prefill mode of a hybrid view's context, from its manifest name (READING_MODES)."""
    if reading not in READING_MODES:
        raise ValueError(f"unknown context reading {reading!r}: choose one of {', '.join(READING_MODES)}")
    return READING_MODES[reading]


# The role of every real token of a whole-sequence mode (causal: all one span)
MODE_ROLES = {AttentionMode.BIDIRECTIONAL: CONTEXT, AttentionMode.LEFT_CONTEXT: LEFT_CONTEXT,
              AttentionMode.LEFT_CONTEXT_GAP: LEFT_CONTEXT, AttentionMode.LEFT_CONTEXT_HIDDEN_GAP: LEFT_CONTEXT,
              AttentionMode.CAUSAL: 1}


# The role of the token before each gap, whose output predicts the fill's first token, where it
# differs from the rest of the context (it reads the text after the gap)
GAP_PREDICTOR_ROLES = {AttentionMode.LEFT_CONTEXT_GAP: CONTEXT, AttentionMode.LEFT_CONTEXT_HIDDEN_GAP: GAP_PREDICTOR}


def gap_predictor_role(mode: AttentionMode) -> int | None:
    """GAP_PREDICTOR_ROLES' role for `mode`; None: the context's own role."""
    return GAP_PREDICTOR_ROLES.get(AttentionMode(mode))


def allowed_attention(
    query_roles: torch.Tensor,  # (B, Q)
    key_roles: torch.Tensor,  # (B, K)
    query_positions: torch.Tensor,  # (B, Q)
    key_positions: torch.Tensor,  # (B, K)
) -> torch.Tensor:
    """(B, 1, Q, K) bool: may query q attend to key k."""
    q_role = query_roles[:, :, None]  # (B, Q, 1)
    k_role = key_roles[:, None, :]  # (B, 1, K)
    q_pos = query_positions[:, :, None]
    k_pos = key_positions[:, None, :]
    q_real = q_role != PAD
    k_context = torch.isin(k_role, torch.tensor(CONTEXT_ROLES, device=k_role.device))
    # a LEFT_CONTEXT query reads context up to its own position, GAP_PREDICTOR keys excepted;
    # every other real query all of it
    left_reading = (k_pos <= q_pos) & (k_role != GAP_PREDICTOR)
    sees_context = k_context & q_real & ((q_role != LEFT_CONTEXT) | left_reading)
    sees_own_span = (q_role >= 1) & (k_role == q_role) & (k_pos <= q_pos)
    # Padding queries see everything: their outputs are discarded, and a row of
    # all -inf would turn the softmax into NaN.
    allowed = sees_context | sees_own_span | ~q_real
    return allowed[:, None, :, :]


def attention_mask(
    query_roles: torch.Tensor,
    query_positions: torch.Tensor,
    key_roles: torch.Tensor | None = None,
    key_positions: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive 4-D mask (B, 1, Q, K): 0 where allowed, dtype-min elsewhere.

    Without keys the queries attend to themselves (a full forward or a prefill);
    with keys (cached roles + the new queries' roles) it is one decode step.
    """
    if key_roles is None:
        key_roles, key_positions = query_roles, query_positions
    allowed = allowed_attention(query_roles, key_roles, query_positions, key_positions)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def roles_for_mode(mode: AttentionMode | str, padding_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) roles for a whole-sequence mode from a 0/1 padding mask (1 = real)."""
    mode = AttentionMode(mode)
    if mode is AttentionMode.HYBRID:
        raise ValueError("hybrid roles depend on where the spans are: build them explicitly")
    real_role = MODE_ROLES[mode]
    roles = torch.full(padding_mask.shape, PAD, dtype=torch.long, device=padding_mask.device)
    return roles.masked_fill(padding_mask.bool(), real_role)


def positions_from_padding(padding_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) text positions 0, 1, ... counted over real tokens only.

    Left or right padding alike: the first real token is at position 0.
    Padding slots get position 0 (they are masked anyway).
    """
    real = padding_mask.long()
    return ((real.cumsum(dim=1) - 1) * real).clamp(min=0)
