"""Write-then-rename, the one way files and folders are written: a reader (or a run killed
at any moment) sees the old content or the new, never half of it.

    with atomic_file(path) as tmp:              # one file: cached outputs, feature matrices
        tmp.write_text(...)
    with atomic_dir(target) as tmp:             # a folder; an existing target is replaced
        model.save_pretrained(tmp)              #   (checkpoints, published adapters)
    with atomic_dir(target, marker="x.json") as tmp:   # a cache folder: readers look for
        ...                                             #   `marker`; a concurrent writer's copy wins
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def temp_beside(target: Path) -> Path:
    """Where `target` is written first: same folder (so the rename is atomic), one per process."""
    return target.with_name(f"{target.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temp path beside `path` to write; it replaces `path` when the block ends (removed on error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(target: Path, marker: str | None = None) -> Iterator[Path]:
    """A fresh folder beside `target` to fill, renamed to `target` when the block ends (removed
    on error). Without `marker` an existing `target` is replaced. With `marker` (a file written
    last, which readers check for) a copy a concurrent writer renamed first is kept instead."""
    target = Path(target)
    tmp = temp_beside(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if marker is None:
        replace_dir(tmp, target)
        return
    try:
        tmp.rename(target)
    except OSError:  # a concurrent writer won the race: keep its copy
        if not (target / marker).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, target: Path) -> None:
    """`tmp` becomes `target`: the old one is moved aside first (a folder cannot be renamed
    over a non-empty one), then removed."""
    old = target.with_name(target.name + ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
