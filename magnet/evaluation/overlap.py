"""Was an evaluation's data seen in training? Read from the adapter's manifest.

Training writes a record of every file it read into the manifest's `data` list
(magnet.splits.data_record: file name, rule, sha256, split). A scored file overlaps the
training data when a record has the same content (sha256) and read the same split, or the
whole file (magnet.splits.seen_in_training). Adapters trained before the records list only
file names: such a name counts as the whole file, seen, when the scored file has that name.

`magnet eval paper` marks a row whose data overlaps `seen in training` and prints no figure
and no PASS/FAIL for it; the single `magnet eval` commands print a note under their figure.
"""
from __future__ import annotations

from pathlib import Path

from magnet.splits import seen_in_training


def training_records(engine) -> list:
    """The adapter's `data` entries (dicts, or plain file names for older adapters), and those
    of every adapter it grew from (`earlier_records`); [] without an adapter."""
    manifest = engine.loaded.manifest if engine.loaded.adapter_path is not None else None
    if not manifest:
        return []
    return list(manifest.data) + earlier_records(manifest.extra)


def earlier_records(extra: dict) -> list:
    """The `data` of every adapter a manifest's `extra` (or an earlier phase's record) says it
    grew from: the phase before it (`init_adapter`) and a mix's start (`interpolated.start`,
    training/interpolate.py), each with the ones they grew from."""
    records = []
    for earlier in (extra.get("init_adapter"), (extra.get("interpolated") or {}).get("start")):
        if isinstance(earlier, dict):
            records += (earlier.get("data") or []) + earlier_records(earlier)
    return records


def overlap(records: list, path: str | Path, split: str | None) -> str | None:
    """Why `split` of `path` (None: all of it) was seen in training, or None when it was not."""
    name = Path(path).name
    if any(isinstance(r, str) and Path(r).name == name for r in records):
        return f"the adapter trained on {name} (its manifest lists the file by name: all of it counts as seen)"
    records = [r for r in records if isinstance(r, dict)]
    if seen_in_training(records, path, split):
        scored = f"the {split} split" if split else "all"
        return f"the adapter's training records (magnet.json) include {scored} of {name}"
    return None


def first_overlap(records: list, files: list[tuple[str | Path, str | None]]) -> str | None:
    """The first overlap among (path, split) pairs, or None when all are unseen."""
    return next((why for path, split in files if (why := overlap(records, path, split))), None)


def seen_note(engine, files: list[tuple[str | Path, str | None]]) -> str | None:
    """A line for a single command's output when its data was seen in training."""
    why = first_overlap(training_records(engine), files)
    return f"note: seen in training: {why}; this figure says how well it memorised, not how it generalises" \
        if why else None
