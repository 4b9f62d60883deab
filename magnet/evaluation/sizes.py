"""How much of each data set an evaluation scores: every subsample size in one place.

FULL is `magnet eval paper` (and the single commands' defaults); QUICK is its `--quick`.
Subsamples are deterministic: `spread` takes evenly spaced items, so a subsample covers the
whole file (STS-B dev, for one, is ordered by genre) and two runs score the same items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

from magnet.training.config import TrainConfig

T = TypeVar("T")

HELDOUT_STORIES = 200  # ROC stories per row (from the report split; magnet.splits)


@dataclass(frozen=True)
class EvalSizes:
    stsb_pairs: int  # STS-B dev pairs, spread over the file (0 = all 1,500)
    conll_train: int  # the first N CoNLL train sentences: the probes are fit on them
    conll_select: int  # the next M train sentences: each head's checkpoint is chosen on them
    conll_valid: int  # the first N valid sentences: the reported split (0 = all 3,250)
    probe_steps: int  # head training steps (paper: 4000, batch 8 sentences)
    roc_stories: int  # the last N ROC stories (at most HELDOUT_STORIES: held out from training)
    wikitext_windows: int  # windows of WikiText-2 valid scored, spread over the file
    window_tokens: int  # tokens per window, each scored after an anchor token
    wikitext_prefixes: int  # 5-word WikiText prefixes for the repetition row
    roc_prefixes: int  # first sentences of held-out ROC stories, for the repetition row
    continuation_tokens: int  # greedy tokens generated per repetition prefix (paper: open-ended)
    fill_tokens: int  # max tokens of a cloze fill and of a left-context guess


# Cost with the embedded SmolLM2-135M on CPU (per-item times of a --quick run, scaled up):
# FULL about 18 min of one core (STS-B 6, CoNLL 5, repetition 3, ROC 2, WikiText 1, cloze 1),
# about 12 min on two free cores; QUICK about 4.5 min of one core.
FULL = EvalSizes(stsb_pairs=400, conll_train=600, conll_select=150, conll_valid=400, probe_steps=4000,
                 roc_stories=HELDOUT_STORIES, wikitext_windows=24, window_tokens=256,
                 wikitext_prefixes=16, roc_prefixes=16, continuation_tokens=64, fill_tokens=8)

QUICK = EvalSizes(stsb_pairs=60, conll_train=120, conll_select=40, conll_valid=120, probe_steps=1000,
                  roc_stories=30, wikitext_windows=4, window_tokens=256,
                  wikitext_prefixes=5, roc_prefixes=5, continuation_tokens=64, fill_tokens=8)


def spread(items: Sequence[T], n: int) -> list[T]:
    """n evenly spaced items, in order (all of them when n is 0 or at least len(items))."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]
