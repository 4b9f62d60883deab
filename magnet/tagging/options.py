"""Command-line options shared by `magnet train-tagger` and `magnet eval tagging`."""
from __future__ import annotations

import argparse

from magnet.loading import ModelSpec


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help="local HF checkpoint dir (default: the embedded SmolLM2-135M)")
    group.add_argument("--adapter", default="default",
                       help="adapter dir, 'default' (the shipped one) or 'none' (base model only)")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    group.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: fp32 on CPU)")


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    group.add_argument("--causal", action="store_true",
                       help="causal word vectors (the base model read left to right) instead of bidirectional")
    group.add_argument("--feature-batch", type=int, default=32,
                       help="sentences per engine call (the engine splits them by a token budget; default 32)")
    group.add_argument("--no-cache", action="store_true", help="recompute features instead of reading the cache")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    return ModelSpec(model=args.model, adapter=args.adapter, device=args.device, dtype=args.dtype)


def feature_mode(args: argparse.Namespace) -> str:
    return "causal" if args.causal else "bidirectional"


def load_engine(args: argparse.Namespace):
    from magnet.engine import Engine

    return Engine.from_spec(model_spec(args))
