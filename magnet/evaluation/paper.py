"""`magnet eval paper`: the MAGNET paper's comparison for one base model and its adapter.

    magnet eval paper [--adapter DIR] [--quick] [--output DIR] [--no-cache]

Loads the base model twice: once with the adapter merged, once without. Rows (each scored
on the same subsample for both models; sizes in magnet/evaluation/sizes.py):

    STS-B dev Spearman          base causal and bidirectional, adapted bidirectional
    CoNLL-2003 POS/chunk/NER    linear probes: base causal vs adapted bidirectional word vectors
    ROC middle sentence PPL     adapted hybrid and left to right, base left to right
    WikiText-2 valid PPL        left to right, both
    Rep-Sen / Rep-4             greedy generations from WikiText and ROC prefixes, both
    cloze hit rate              adapted infill vs left-context guesses

Prints a markdown table with the paper's Llama-2-7B figures and the project's targets
(PASS/FAIL); with --output, writes paper.json, paper.md and paper.png there. Word features
and generations are cached in $MAGNET_CACHE_DIR, so a rerun mostly re-scores.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from magnet.evaluation.data_files import DATA_FLAGS, add_data_arguments, data_files
from magnet.evaluation.sizes import FULL, QUICK
from magnet.model_options import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, *DATA_FLAGS)
    add_model_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="small subsamples: a few minutes on CPU")
    parser.add_argument("--output", type=Path, default=None, help="write paper.json, paper.md, paper.png here")
    parser.add_argument("--no-cache", action="store_true", help="recompute cached word features and generations")


def model_description(base, adapted) -> dict:
    from magnet.tagging.heads import adapter_identity

    identity = adapter_identity(adapted.loaded.adapter_path, adapted.loaded.adapter_sha256)
    return {"base": base.name, "base_path": str(base.loaded.base_path), "adapted": adapted.name,
            "adapter": asdict(identity) if identity else None,
            "device": str(adapted.device), "dtype": str(adapted.loaded.dtype).replace("torch.", "")}


def seen_in_training(adapted, files: dict[str, Path]) -> list[str]:
    """Notes for data files the adapter's manifest lists among its training text."""
    manifest = adapted.loaded.manifest
    trained_on = {Path(name).name for name in (manifest.data if manifest else [])}
    notes = []
    if files["--wikitext"].name in trained_on:
        notes.append(f"The adapter was trained on {files['--wikitext'].name}: "
                     "its WikiText rows score text it has seen.")
    if files["--roc"].name in trained_on:
        notes.append(f"The adapter was trained on {files['--roc'].name} without its last stories; "
                     "the ROC rows use only those held-out stories.")
    return notes


def run(args: argparse.Namespace) -> int:
    from magnet.evaluation.criteria import check_criteria
    from magnet.evaluation.paper_report import markdown, write_report
    from magnet.evaluation.paper_rows import PaperRun, measure_rows
    from magnet.model_options import load_base_engine, load_engine

    started = time.perf_counter()
    files = data_files(args, *DATA_FLAGS)  # a missing file fails before minutes of model loading
    sizes = QUICK if args.quick else FULL
    adapted = load_engine(args)
    base = load_base_engine(args, adapted)
    results = measure_rows(PaperRun(base, adapted, files, sizes, not args.no_cache))
    notes = seen_in_training(adapted, files)
    if adapted is base:
        notes.append("No adapter: both columns are the base model.")
    report = {"model": model_description(base, adapted), "quick": args.quick, "sizes": asdict(sizes),
              "data": {flag: str(path) for flag, path in files.items()}, "results": results,
              "criteria": check_criteria(results), "notes": notes,
              "seconds": round(time.perf_counter() - started, 1)}
    print(markdown(report), end="")
    if args.output is not None:
        for path in write_report(report, args.output):
            print(f"wrote {path}")
    return 0
