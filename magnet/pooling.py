"""From hidden states (B, T, H) to sentence and word vectors.

The token-shift rule (paper §3.2.1, §4.1): a decoder's output at position i
predicts token i+1, so the representation of token i is the output at i-1.
Sequences therefore start with an anchor token (BOS) whose output represents
the first real token, and the last token's output (which predicts nothing in
MNTP) is the sentence embedding.
"""
from __future__ import annotations

import torch

from magnet.masks import AttentionMode


def last_token(hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (B, H): the output at each row's last real token (any padding side)."""
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (positions * padding_mask.long()).argmax(dim=1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def shifted_token_states(hidden: torch.Tensor) -> torch.Tensor:
    """(T, H) outputs of [anchor, t1..tn] -> (n, H) representations of t1..tn."""
    return hidden[:-1]


def own_token_states(hidden: torch.Tensor) -> torch.Tensor:
    """(T, H) outputs of [anchor, t1..tn] -> (n, H): each token's own output (a causal read,
    where no later output has seen the token)."""
    return hidden[1:]


def paired_token_states(hidden: torch.Tensor) -> torch.Tensor:
    """(T, H) outputs of [anchor, t1..tn] -> (n, 2H): token i as [output i-1 ; output i].

    The shifted output alone is dominated by the word before (MNTP trains output i-1 to
    predict token i from its neighbours): a sentence's first word reads the anchor. The pair
    adds the token's own output; on CoNLL select sentences it tags better on all three tasks
    (docs/tagging.md)."""
    return torch.cat([shifted_token_states(hidden), own_token_states(hidden)], dim=-1)


# How a word's tokens are read, by the name the tagging heads record (magnet/tagging/heads.py):
# the attention mode of the forward over [anchor, t1..tn], and which outputs stand for each token.
WORD_READINGS = {
    "bidirectional-pair": (AttentionMode.BIDIRECTIONAL, paired_token_states),  # (n, 2H)
    "bidirectional": (AttentionMode.BIDIRECTIONAL, shifted_token_states),  # MNTP's reading
    "causal": (AttentionMode.CAUSAL, own_token_states),  # the base model's own reading
}


def word_means(token_vectors: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """(n, H) token vectors, (W, n) 0/1 membership -> (W, H): each word = mean of its tokens."""
    weights = membership.to(token_vectors.dtype)
    counts = weights.sum(dim=1, keepdim=True).clamp(min=1)
    return (weights @ token_vectors) / counts


def word_membership(offsets: list[tuple[int, int]], word_spans: list[tuple[int, int]]) -> torch.Tensor:
    """(W, n) bool: token j (char span offsets[j]) overlaps word w (char span word_spans[w]).

    A token may belong to two words (BPE merging "U.S" and "." say); a word no
    token overlaps (it cannot happen with offsets that cover the text, but
    truncation can cut words) takes the last token that starts before it.
    """
    membership = torch.zeros(len(word_spans), len(offsets), dtype=torch.bool)
    for w, (ws, we) in enumerate(word_spans):
        for j, (ts, te) in enumerate(offsets):
            if ts < we and te > ws and te > ts:
                membership[w, j] = True
        if not membership[w].any() and offsets:
            before = [j for j, (ts, _) in enumerate(offsets) if ts <= ws]
            membership[w, before[-1] if before else 0] = True
    return membership
