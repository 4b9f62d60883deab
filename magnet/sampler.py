"""From one row of logits to one token, with vLLM's meaning for every field.

    logits (V,) -> penalties -> temperature -> top-k -> top-p -> min-p -> draw

Penalties (as vLLM and the OpenAI API define them):
    repetition_penalty  every token already in the prompt or the output: a positive
                        logit is divided by it, a negative one multiplied (1 = off)
    frequency_penalty   subtracted once per earlier occurrence in the output
    presence_penalty    subtracted once if the token occurs in the output at all
They apply in greedy decoding too, which is how they break greedy loops.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from magnet.sampling import SamplingParams


def penalize(logits: torch.Tensor, params: SamplingParams, prompt_ids: Sequence[int],
             output_ids: Sequence[int]) -> torch.Tensor:
    """(V,) logits with the three penalties applied (a new tensor if any applies)."""
    if params.repetition_penalty == 1.0 and not params.frequency_penalty and not params.presence_penalty:
        return logits
    logits = logits.clone()
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long, device=logits.device)
        if len(seen):
            picked = logits[seen]
            logits[seen] = torch.where(picked > 0, picked / params.repetition_penalty,
                                       picked * params.repetition_penalty)
    if output_ids and (params.frequency_penalty or params.presence_penalty):
        # only the output's distinct tokens, counted in Python: infill applies a frequency
        # penalty by default, to every span at every step, and an output is a few dozen tokens;
        # torch's unique() on them cost 5-50x as much on CPU, a count over the vocabulary more
        counts = Counter(t for t in output_ids if t < logits.shape[-1])
        ids = torch.tensor(list(counts), dtype=torch.long, device=logits.device)
        amounts = torch.tensor([params.frequency_penalty * n + params.presence_penalty for n in counts.values()],
                               dtype=logits.dtype, device=logits.device)
        logits.index_put_((ids,), -amounts, accumulate=True)
    return logits


def truncate(probs: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """(V,) probabilities with top-k, top-p and min-p applied (at least one token survives)."""
    if params.top_k > 0 and params.top_k < probs.shape[-1]:
        kth = probs.topk(params.top_k).values[-1]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p of what is left (always >= 1 token)
        drop = sorted_probs.cumsum(0) - sorted_probs >= params.top_p * sorted_probs.sum()
        drop[0] = False
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    if params.min_p > 0.0:
        probs = torch.where(probs >= params.min_p * probs.max(), probs, torch.zeros_like(probs))
    return probs


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None,
           prompt_ids: Sequence[int] = (), output_ids: Sequence[int] = ()) -> int:
    """(V,) float32 logits -> one token id: greedy at temperature 0, else a draw."""
    logits = penalize(logits, params, prompt_ids, output_ids)
    if params.temperature <= 0:
        return int(logits.argmax())
    # float64 softmax: a tiny top_p or temperature must not underflow every probability to 0
    probs = truncate(torch.softmax(logits.double() / params.temperature, dim=-1), params)
    if not torch.isfinite(probs).all() or probs.sum() <= 0:
        return int(logits.argmax())
    return int(torch.multinomial(probs, 1, generator=generator))
