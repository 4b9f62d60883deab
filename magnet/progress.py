"""Progress bars for commands that run longer than a few seconds: one bar per stage, on stderr
(stdout stays the command's result), with a rate and an ETA.

    for story in progress(stories, "ROC adapted hybrid", unit="story"): ...

MAGNET_PROGRESS=0 turns them off (logs, CI).
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

ENV_VAR = "MAGNET_PROGRESS"


def progress(items: Iterable[T] | None = None, desc: str = "", total: int | None = None, unit: str = "it",
             initial: int = 0, enabled: bool = True):
    """A tqdm bar over `items` (or a manual one of `total` steps from `initial`: call .update(n));
    off where the caller says (`enabled`) or MAGNET_PROGRESS=0."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit=unit, initial=initial, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, disable=not enabled or os.environ.get(ENV_VAR, "1") == "0")
