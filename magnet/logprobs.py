"""Token log-probabilities on the torch path: what `SamplingParams.logprobs` and
`prompt_logprobs` record (magnet.sampling.TokenLogprob), from raw logits.

    token_logprob(logits (V,), token, k)            a decoded token, from its pending logits
    sequence_logprobs(model, hidden (T, H), ids, k)  a prompt's tokens, from its causal prefill

Both read the log-softmax of the model's raw logits (vLLM's default `raw_logprobs`):
penalties, temperature and truncation shape what is drawn, not what is reported.
"""
from __future__ import annotations

import torch

from magnet.forward import logits as logits_of
from magnet.sampling import TokenLogprob

ROWS_PER_CHUNK = 256  # prompt positions turned into (rows, V) logits at a time: bounds the memory


def token_logprob(logits: torch.Tensor, token: int, k: int) -> TokenLogprob:
    """(V,) logits that predicted `token` -> its log-probability and the k likeliest."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return TokenLogprob(token, float(logprobs[token]), top_of(logprobs, k))


def sequence_logprobs(model, hidden: torch.Tensor, ids: list[int], k: int) -> list[TokenLogprob]:
    """`ids`'s log-probabilities read left to right: hidden (T-1, H) are the causal outputs at
    positions 0..T-2, each predicting the next id; the first id has none (logprob None)."""
    out = [TokenLogprob(ids[0], None)]
    for start in range(0, len(ids) - 1, ROWS_PER_CHUNK):
        rows = torch.log_softmax(logits_of(model, hidden[start:start + ROWS_PER_CHUNK]).float(), dim=-1)  # (n, V)
        for row, token in zip(rows, ids[start + 1:start + 1 + ROWS_PER_CHUNK]):
            out.append(TokenLogprob(token, float(row[token]), top_of(row, k)))
    return out


def top_of(logprobs: torch.Tensor, k: int) -> tuple[tuple[int, float], ...]:
    if k <= 0:
        return ()
    values, tokens = logprobs.topk(k)
    return tuple(zip(tokens.tolist(), values.tolist()))
