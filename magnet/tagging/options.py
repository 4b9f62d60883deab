"""Feature options shared by `magnet train-tagger` and `magnet eval tagging`
(the model options are in magnet/model_options.py)."""
from __future__ import annotations

import argparse


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    group.add_argument("--causal", action="store_true",
                       help="causal word vectors (the base model read left to right) instead of bidirectional")
    group.add_argument("--feature-batch", type=int, default=32,
                       help="sentences per engine call (the engine splits them by a token budget; default 32)")
    group.add_argument("--no-cache", action="store_true", help="recompute features instead of reading the cache")


def feature_mode(args: argparse.Namespace) -> str:
    return "causal" if args.causal else "bidirectional"
