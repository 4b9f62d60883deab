"""`magnet eval BENCHMARK ...`: one sub-command per benchmark.

A benchmark is a module with add_arguments(parser) and run(args) -> int, like
the top-level commands; add a line to BENCHMARKS to add one. Each scores the report split of
its data unless --split says otherwise (magnet/evaluation/data_files.py, magnet/splits.py).
"""
from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "tagging": ("magnet.evaluation.tagging", "POS accuracy, NER and chunk F1 on a CoNLL-2003 file"),
    "sts": ("magnet.evaluation.sts", "STS-B Spearman of embedding cosine against the gold scores"),
    "infill": ("magnet.evaluation.infill", "ROC Stories middle-sentence perplexity: the hybrid fill and its controls "
                                           "(left to right, no suffix, another story's suffix), or --causal only"),
    "wikitext": ("magnet.evaluation.wikitext", "WikiText-2 perplexity of one split's articles, left to right"),
    "repetition": ("magnet.evaluation.repetition", "Rep-Sen and Rep-4 of greedy generations (paper Eq. 6)"),
    "cloze": ("magnet.evaluation.cloze", "hit rate of infills that only the text after the gap decides"),
    "paper": ("magnet.evaluation.paper", "the MAGNET paper's table: base vs adapted on every benchmark above"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (module_name, help_text) in BENCHMARKS.items():
        bench = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(bench)


def run(args: argparse.Namespace) -> int:
    module_name, _ = BENCHMARKS[args.benchmark]
    return int(importlib.import_module(module_name).run(args) or 0)
