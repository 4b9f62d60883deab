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
    return engine_of(model_spec(args))


def load_base_engine(args: argparse.Namespace, adapted=None):
    """The same base model without its adapter (the 'before' column of a comparison); `adapted`
    itself when it has no adapter, so a base-only comparison loads one model."""
    from dataclasses import replace

    if adapted is not None and adapted.loaded.adapter_path is None:
        return adapted
    return engine_of(replace(model_spec(args), adapter=None))


def engine_of(spec: ModelSpec):
    """The engine of `spec`. A model, adapter, device or dtype that cannot be used ends the
    command with one line naming it (the loaders' messages name the flag), not a traceback."""
    import torch

    from magnet.engine import Engine
    from magnet.hardware import parse_dtype

    if spec.device is not None:
        try:
            torch.device(spec.device)
        except RuntimeError as exc:
            raise SystemExit(f"magnet: --device {spec.device}: {str(exc).splitlines()[0]}") from None
    if spec.dtype is not None:
        try:
            parse_dtype(spec.dtype)
        except ValueError as exc:
            raise SystemExit(f"magnet: --dtype {spec.dtype}: {exc}") from None
    try:
        return Engine.from_spec(spec)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"magnet: {exc}") from None
