"""95% intervals of the paper table's figures over the items each one scores.

A figure of `magnet eval paper` is a mean over a sample: 200 ROC stories, 400 STS-B pairs, 16
prefixes, 46 cloze items. Another sample of the same split moves it: the default adapter's
fill read 0.90x its left-to-right PPL on the first 150 select stories and 0.94x on all 381.
So each judged figure comes with the interval a bootstrap gives it: the items drawn with
replacement RESAMPLES times, the figure recomputed on each draw, the middle LEVEL of the
draws kept (paired: both readings of a story, both models' texts from one prefix, are drawn
together). A fixed seed, so two runs on the same numbers print the same interval.

    bootstrap_interval(lambda draws: values[draws].mean(dim=1), len(values))   # -> (low, high)

A target whose bound lies inside its figure's interval is neither shown met nor missed
(magnet/evaluation/criteria.py: UNSURE).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

RESAMPLES = 2000
LEVEL = 0.95


def bootstrap_interval(statistic: Callable[[torch.Tensor], torch.Tensor], n: int,
                       seed: int = 0) -> tuple[float, float]:
    """The LEVEL interval of `statistic` over n items: statistic((RESAMPLES, n) item indices,
    each row one draw with replacement) -> (RESAMPLES,) figures. Draws whose figure is not
    finite (a ratio over a draw whose denominator is 0) are left out; (nan, nan) when none is
    (every denominator 0: no interval)."""
    if n < 1:
        raise ValueError("an interval needs at least one item")
    draws = torch.randint(n, (RESAMPLES, n), generator=torch.Generator().manual_seed(seed))
    figures = torch.as_tensor(statistic(draws), dtype=torch.float64)
    figures = figures[torch.isfinite(figures)]
    if not len(figures):
        return math.nan, math.nan
    tail = (1 - LEVEL) / 2
    low, high = torch.quantile(figures, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return low, high


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Of the mean of per-item values (a hit rate: values 0 or 1)."""
    x = torch.tensor(values, dtype=torch.float64)
    return bootstrap_interval(lambda draws: x[draws].mean(dim=1), len(x))


def ratio_of_means_interval(over: Sequence[float], under: Sequence[float]) -> tuple[float, float]:
    """Of mean(over) / mean(under), the two per-item values of an item drawn together."""
    a, b = torch.tensor(over, dtype=torch.float64), torch.tensor(under, dtype=torch.float64)
    return bootstrap_interval(lambda draws: a[draws].mean(dim=1) / b[draws].mean(dim=1), len(a))


def perplexity_ratio_interval(over: Sequence[float], under: Sequence[float],
                              counts: Sequence[int]) -> tuple[float, float]:
    """Of PPL(over) / PPL(under) = exp((sum over - sum under) / sum counts): per-item summed NLLs
    of two readings of the same tokens, and each item's token count."""
    delta = torch.tensor(over, dtype=torch.float64) - torch.tensor(under, dtype=torch.float64)
    n = torch.tensor(counts, dtype=torch.float64)
    return bootstrap_interval(lambda draws: torch.exp(delta[draws].sum(dim=1) / n[draws].sum(dim=1).clamp(min=1)),
                              len(n))


def statistic_interval(statistic: Callable[[torch.Tensor], float], n: int) -> tuple[float, float]:
    """Of a figure that is not a mean (a rank correlation): `statistic(indices)` (n,) -> float,
    computed once a draw."""
    return bootstrap_interval(lambda draws: torch.tensor([statistic(row) for row in draws]), n)


def corpus_score(sums: torch.Tensor, entity: bool) -> torch.Tensor:
    """(..., 3) summed (right, gold, predicted) -> (...,) accuracy or entity F1
    (magnet.tagging.metrics.sentence_counts)."""
    right, gold, predicted = sums.unbind(-1)
    return 2 * right / (gold + predicted) if entity else right / gold


def score_difference_interval(over: Sequence[tuple[int, int, int]], under: Sequence[tuple[int, int, int]],
                              entity: bool) -> tuple[float, float]:
    """Of score(over) - score(under), two taggers' per-sentence counts on the same sentences
    (a sentence's two counts drawn together)."""
    a, b = torch.tensor(over, dtype=torch.float64), torch.tensor(under, dtype=torch.float64)  # (S, 3)
    return bootstrap_interval(lambda draws: corpus_score(a[draws].sum(dim=1), entity)
                              - corpus_score(b[draws].sum(dim=1), entity), len(a))
