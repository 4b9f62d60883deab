"""The attention mask is data: one function builds it from per-token roles.

Every token carries a role (an int):
    PAD     (-1)  padding: seen by no real token
    CONTEXT  (0)  sees every context token, in both directions
    span k  (>=1) sees every context token and the tokens of span k at or before
                  its own text position; never later span tokens, never other spans

The three attention modes of MAGNET are three ways of filling the roles:
    bidirectional   every real token is CONTEXT
    causal          every real token belongs to span 1 (so causal is "all span")
    hybrid          context around one or more spans (paper Fig. 2c/2d)

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


class AttentionMode(str, Enum):
    CAUSAL = "causal"
    BIDIRECTIONAL = "bidirectional"
    HYBRID = "hybrid"


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
    sees_context = (k_role == CONTEXT) & q_real
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
    real_role = CONTEXT if mode is AttentionMode.BIDIRECTIONAL else 1
    roles = torch.full(padding_mask.shape, PAD, dtype=torch.long, device=padding_mask.device)
    return roles.masked_fill(padding_mask.bool(), real_role)


def positions_from_padding(padding_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) text positions 0, 1, ... counted over real tokens only.

    Left or right padding alike: the first real token is at position 0.
    Padding slots get position 0 (they are masked anyway).
    """
    real = padding_mask.long()
    return ((real.cumsum(dim=1) - 1) * real).clamp(min=0)
