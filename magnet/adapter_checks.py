"""An adapter is proven before a model with it is served (magnet/loading.py calls these).

    check_adapter_files(path)                 # before loading: config, manifest, weights readable and finite
    check_test_forward(model, tokenizer, path)  # after merging: a fixed input gives finite outputs

Shapes are checked by peft when the weights are attached (a mismatch is an
AdapterMismatchError naming the adapter). Every failure names the adapter and its
path: a truncated file, NaN weights or a manifest that does not parse must never
be served as `null` embeddings and empty texts.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from magnet.manifest import MANIFEST_FILE, AdapterManifest

CONFIG_FILE = "adapter_config.json"
TEST_INPUT = "The quick brown fox jumps over the lazy dog."  # the test forward's fixed input


class AdapterCheckError(ValueError):
    """An adapter that cannot be served (unreadable, non-finite, or its outputs are)."""


def refuse(path: Path, problem: str) -> AdapterCheckError:
    return AdapterCheckError(f"adapter {path.name!r} ({path}) {problem}")


def check_adapter_files(path: Path) -> None:
    """Its config and manifest parse, and its weights load and are all finite."""
    path = Path(path)
    for name in (CONFIG_FILE, MANIFEST_FILE):
        if (path / name).is_file():
            try:
                json.loads((path / name).read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise refuse(path, f"has an unreadable {name} ({exc}): write it again") from exc
    try:
        AdapterManifest.load(path)
    except (TypeError, KeyError) as exc:
        raise refuse(path, f"has a {MANIFEST_FILE} with missing or unknown fields ({exc})") from exc
    for name, tensor in adapter_tensors(path):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise refuse(path, f"has non-finite weights (NaN or inf) in {name}: it cannot be served; "
                               "use another checkpoint of that training run")


def adapter_tensors(path: Path):
    """(name, tensor) of its weights file, read whole: a truncated or corrupt file fails here."""
    weights = sorted(path.glob("adapter_model.*"))
    if not weights:
        raise refuse(path, "has no adapter_model.safetensors (or .bin) weights file")
    file = weights[0]
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(file)
        else:
            tensors = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors' own errors name neither the adapter nor the file
        raise refuse(path, f"has an unreadable weights file {file.name} (truncated or corrupt: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return tensors.items()


@torch.inference_mode()
def check_test_forward(model, tokenizer, path: Path) -> None:
    """The merged model's logits on a fixed input are all finite."""
    ids = tokenizer(TEST_INPUT, return_tensors="pt")["input_ids"].to(next(model.parameters()).device)
    logits = model(input_ids=ids).logits
    if not bool(torch.isfinite(logits).all()):
        raise refuse(Path(path), f"gives non-finite outputs (NaN or inf) on a test input {TEST_INPUT!r}: "
                                 "it cannot be served")
