"""How much of each data set an evaluation scores: every subsample size in one place.

FULL is `magnet eval paper` (and the single commands' defaults); QUICK is its `--quick`.
Subsamples are deterministic: `spread` takes evenly spaced items, so a subsample covers the
whole file (STS-B dev, for one, is ordered by genre) and two runs score the same items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class EvalSizes:
    # every count is of the split scored (--split, magnet/splits.py); 0 = all of it
    stsb_pairs: int  # STS-B pairs, spread over the split (report: all 1,500 of dev)
    conll_train: int  # the first N sentences of CoNLL train's train documents: the probes are fit on them
    conll_select: int  # the first M of its select documents: each head's checkpoint is chosen on them
    conll_valid: int  # the first N sentences scored (report: valid, 3,250)
    probe_steps: int  # head training steps (paper: 4000, batch 8 sentences)
    roc_stories: int  # ROC stories spread over the split (report: ~375)
    wikitext_windows: int  # windows of the split's WikiText-2 articles, spread over them
    window_tokens: int  # tokens per window, each scored after an anchor token
    wikitext_prefixes: int  # 5-word WikiText prefixes for the repetition row
    roc_prefixes: int  # first sentences of the split's ROC stories, for the repetition row
    continuation_tokens: int  # greedy tokens generated per repetition prefix (paper: open-ended)
    fill_tokens: int  # max tokens of a cloze fill and of a left-context guess
    cloze_items: int  # cloze items, spread over the split's set (magnet/evaluation/cloze.py)


# Cost with the embedded SmolLM2-135M on CPU, cold caches, every row measured: QUICK 4.0 min of
# one core (`time magnet eval paper --quick`, user CPU: STS-B 26 s, CoNLL 48, ROC 21, WikiText 6,
# repetition 88, cloze 42, the rest loading). FULL about 19 min of one core (scaled from QUICK's
# per-item times), about 12 min on two free cores.
FULL = EvalSizes(stsb_pairs=400, conll_train=600, conll_select=150, conll_valid=400, probe_steps=4000,
                 roc_stories=200, wikitext_windows=24, window_tokens=256,
                 wikitext_prefixes=16, roc_prefixes=16, continuation_tokens=64, fill_tokens=8, cloze_items=0)

QUICK = EvalSizes(stsb_pairs=60, conll_train=120, conll_select=40, conll_valid=120, probe_steps=1000,
                  roc_stories=30, wikitext_windows=4, window_tokens=256,
                  wikitext_prefixes=5, roc_prefixes=5, continuation_tokens=64, fill_tokens=8, cloze_items=16)


def spread(items: Sequence[T], n: int) -> list[T]:
    """n evenly spaced items, in order (all of them when n is 0 or at least len(items))."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]
