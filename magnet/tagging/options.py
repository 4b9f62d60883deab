"""Feature options shared by `magnet train-tagger` and `magnet eval tagging`
(the model options are in magnet/model_options.py)."""
from __future__ import annotations

import argparse

from magnet.tagging.heads import DEFAULT_FEATURE_MODE, FEATURE_MODES


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    group.add_argument("--features", choices=FEATURE_MODES, default=None,
                       help=f"which word vectors (magnet/tagging/heads.py; train-tagger default {DEFAULT_FEATURE_MODE}, "
                            "eval tagging: the heads' own)")
    group.add_argument("--causal", action="store_true",
                       help="--features causal: the model read left to right (the base model's row)")
    group.add_argument("--feature-batch", type=int, default=32,
                       help="sentences per engine call (the engine splits them by a token budget; default 32)")
    group.add_argument("--no-cache", action="store_true", help="recompute features instead of reading the cache")


def feature_mode(args: argparse.Namespace, default: str = DEFAULT_FEATURE_MODE) -> str:
    """The word vectors the flags ask for, else `default`."""
    if args.causal and args.features not in (None, "causal"):
        raise SystemExit(f"--causal and --features {args.features} disagree: pass one")
    return "causal" if args.causal else args.features or default
