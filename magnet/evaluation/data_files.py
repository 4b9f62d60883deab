"""Evaluation data files: flag defaults, the split scored, and how a given path is found.

The data sits beside the checkout (`../shared/data/...` from the repository root). A relative
path is looked up from the current directory first, then from the repository root, so the
commands work from the repo, from elsewhere, and in a CI clone with shared/ as its sibling.

Every `magnet eval` command scores one split of its files (magnet/splits.py), `--split`:
    report  (default) what the README and `magnet eval paper` print as results
    select  what training-time choices (checkpoint, mix weight, recipe) are made on
    train   the text training reads (to see what an adapter memorised)
Two resources keep their splits in different files: STS-B (train and select pairs in
sts-train.csv, report = sts-dev.csv) and CoNLL-2003 (train and select documents in train.txt,
report = valid.txt); their flags default to the file that holds the split asked for. A file
with no split rule (your own data) is scored whole.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from magnet.splits import REPORT, SELECT, SPLITS, TRAIN, USER_TEXT, rule_for, rule_name

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = "../shared/data"

STSB_DEV = f"{SHARED_DATA}/stsb/sts-dev.csv"
STSB_TRAIN = f"{SHARED_DATA}/stsb/sts-train.csv"
CONLL_TRAIN = f"{SHARED_DATA}/conll2003/train.txt"
CONLL_VALID = f"{SHARED_DATA}/conll2003/valid.txt"

# flag -> (default path, or {split: default path} where the split decides the file; what the file is)
DATA_FLAGS = {
    "--stsb": ({REPORT: STSB_DEV, SELECT: STSB_TRAIN, TRAIN: STSB_TRAIN},
               "STS-B file (tab-separated, score in field 5), scored on --split's pairs"),
    "--conll-train": (CONLL_TRAIN, "CoNLL-2003 file the probes are fit on (its train documents) and "
                                   "choose their checkpoint on (its select documents)"),
    "--conll-valid": ({REPORT: CONLL_VALID, SELECT: CONLL_TRAIN, TRAIN: CONLL_TRAIN},
                      "CoNLL-2003 file the probes are scored on, --split's documents"),
    "--roc": (f"{SHARED_DATA}/rocstories/cloze_test_val_spring2016.csv", "ROC Stories cloze CSV"),
    "--wikitext": (f"{SHARED_DATA}/wikitext2/wiki.valid.raw", "WikiText-2 valid (raw)"),
}


def default_help(default) -> str:
    if isinstance(default, dict):
        return ", ".join(f"--split {split}: {path}" for split, path in default.items())
    return str(default)


def add_split_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=SPLITS, default=REPORT,
                        help="which documents of each data file to score (magnet/splits.py): report (default, "
                             "the results), select (for training-time choices), train (what training read)")


def add_data_arguments(parser: argparse.ArgumentParser, *flags: str, dest: dict[str, str] | None = None) -> None:
    """One option per flag (`dest` renames a flag, e.g. {"--stsb": "--data"} for a one-file command)."""
    group = parser.add_argument_group("data (relative paths: from the current directory, then the repo root)")
    for flag in flags:
        default, what = DATA_FLAGS[flag]
        name = (dest or {}).get(flag, flag)
        group.add_argument(name, dest=flag_dest(flag), default=None,
                           help=f"{what} (default {default_help(default)})")


def flag_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def flag_value(args: argparse.Namespace, flag: str) -> str:
    """The path given for `flag`, or its default for the split asked for."""
    given = getattr(args, flag_dest(flag))
    if given is not None:
        return given
    default = DATA_FLAGS[flag][0]
    return default[getattr(args, "split", REPORT)] if isinstance(default, dict) else default


def file_split(path: str | Path, split: str, flag: str, shown: str | None = None) -> str | None:
    """The split of `path` to read for `split`: `split` itself for a file with a split rule (a
    file with no such document fails, naming the one that has them), None (all of it) for a file
    with no rule: your own data. `shown`: the option as the user typed it (default `flag`)."""
    rule = rule_for(path)
    if rule is USER_TEXT:
        return None
    if split not in rule.splits:
        default = DATA_FLAGS[flag][0]
        hint = f"; its {split} documents are in {default[split]}" if isinstance(default, dict) else ""
        raise SystemExit(f"{shown or flag} {path}: {rule_name(path)} has no {split} documents (magnet/splits.py "
                         f"splits it into {', '.join(rule.splits)}){hint}")
    return split


def split_note(path: str | Path, split: str | None) -> str:
    """How a scored file was read, for a command's output: 'sts-dev.csv, report split'."""
    return f"{Path(path).name}, {split} split" if split else f"{Path(path).name}, whole file (no split rule)"


def find_data_file(value: str | Path, flag: str) -> Path:
    """The file a flag names, or SystemExit with one line saying which flag and where it looked."""
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPO_ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = " or ".join(os.path.normpath(c) for c in candidates)
    raise SystemExit(f"{flag} {value}: no such file (looked for {tried})")


def data_files(args: argparse.Namespace, *flags: str) -> dict[str, Path]:
    """{flag: found path} for the given flags, checked before any model is loaded."""
    return {flag: find_data_file(flag_value(args, flag), flag) for flag in flags}
