"""Positives x+ for SSCL when no paraphrase of x is at hand.

The paper paraphrases each line with a paraphrase model; none can be loaded
here, so a positive comes from, in order of preference:
    1. a real paraphrase pair (`--pairs`, e.g. MRPC's Quality=1 rows);
    2. an augmenter applied to a long line of the training text:
         word_dropout  drop ~10% of the words and crop up to 10% from each end
                       (a cheap lexical view that keeps the meaning);
         dropout       x+ = x, the model's dropout is the only noise (SimCSE).
Any callable `(text, rng) -> text` can be registered in AUGMENTERS.
"""
from __future__ import annotations

import random
from typing import Callable

Augmenter = Callable[[str, random.Random], str]


def word_dropout(text: str, rng: random.Random, rate: float = 0.1, crop: float = 0.1) -> str:
    words = text.split()
    if len(words) < 4:
        return text
    left = rng.randint(0, int(len(words) * crop))
    right = len(words) - rng.randint(0, int(len(words) * crop))
    kept = [w for w in words[left:right] if rng.random() >= rate]
    return " ".join(kept or words)


def identity(text: str, rng: random.Random) -> str:
    return text


AUGMENTERS: dict[str, Augmenter] = {"word_dropout": word_dropout, "dropout": identity}


def get_augmenter(name: str) -> Augmenter:
    try:
        return AUGMENTERS[name]
    except KeyError:
        raise ValueError(f"unknown augmenter {name!r}: choose one of {', '.join(AUGMENTERS)}") from None
