"""Command-line options that pick the model: every command that loads one uses these."""
from __future__ import annotations

import argparse

from magnet.hardware import DTYPE_HELP
from magnet.loading import ModelSpec


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help="local HF checkpoint dir (default: the embedded SmolLM2-135M)")
    group.add_argument("--adapter", default="default",
                       help="adapter dir, 'default' (the shipped one) or 'none' (base model only)")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    group.add_argument("--dtype", default=None, help=DTYPE_HELP)


def model_spec(args: argparse.Namespace) -> ModelSpec:
    return ModelSpec(model=args.model, adapter=args.adapter, device=args.device, dtype=args.dtype)


def load_engine(args: argparse.Namespace):
    from magnet.engine import Engine

    return Engine.from_spec(model_spec(args))


def load_base_engine(args: argparse.Namespace, adapted=None):
    """The same base model without its adapter (the 'before' column of a comparison); `adapted`
    itself when it has no adapter, so a base-only comparison loads one model."""
    from dataclasses import replace

    from magnet.engine import Engine

    if adapted is not None and adapted.loaded.adapter_path is None:
        return adapted
    return Engine.from_spec(replace(model_spec(args), adapter=None))
