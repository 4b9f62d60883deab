"""Evaluation data files: flag defaults and how a given path is found.

The data sits beside the checkout (`../shared/data/...` from the repository root). A relative
path is looked up from the current directory first, then from the repository root, so the
commands work from the repo, from elsewhere, and in a CI clone with shared/ as its sibling.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = "../shared/data"

# flag -> (default path, what the file is)
DATA_FLAGS = {
    "--stsb": (f"{SHARED_DATA}/stsb/sts-dev.csv", "STS-B dev file (tab-separated, score in field 5)"),
    "--conll-train": (f"{SHARED_DATA}/conll2003/train.txt", "CoNLL-2003 train file: the probes are fit on it"),
    "--conll-valid": (f"{SHARED_DATA}/conll2003/valid.txt", "CoNLL-2003 valid file: the reported split"),
    "--roc": (f"{SHARED_DATA}/rocstories/cloze_test_val_spring2016.csv", "ROC Stories cloze CSV"),
    "--wikitext": (f"{SHARED_DATA}/wikitext2/wiki.valid.raw", "WikiText-2 valid (raw)"),
}


def add_data_arguments(parser: argparse.ArgumentParser, *flags: str) -> None:
    group = parser.add_argument_group("data (relative paths: from the current directory, then the repo root)")
    for flag in flags:
        default, what = DATA_FLAGS[flag]
        group.add_argument(flag, default=default, help=f"{what} (default {default})")


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
    return {flag: find_data_file(getattr(args, flag.lstrip("-").replace("-", "_")), flag) for flag in flags}
