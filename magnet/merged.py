"""The base model with its LoRA adapter merged in, saved once as a plain checkpoint.

vLLM reads a Hugging Face directory (config, safetensors, tokenizer), and serving
a LoRA through its `enable_lora` path runs at about half speed on CPU. So the
adapter is merged into the base weights once (peft `merge_and_unload`, through
the shared loader) and the result cached next to the converted base:

    $MAGNET_CACHE_DIR/SmolLM2-135M-Instruct                 # converted base
    $MAGNET_CACHE_DIR/SmolLM2-135M-Instruct+adapter-1a2b..  # base + adapter, merged

The directory name carries a hash of the adapter's files and of the base's
weight files (path, size, mtime), so a retrained adapter or a new base gets a
new directory and a stale merge is never served.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from magnet.atomic import atomic_dir
from magnet.embedded import cache_dir
from magnet.loading import ModelSpec, load_model, resolve_adapter_path, resolve_base_path

log = logging.getLogger(__name__)

MERGE_INFO_FILE = "magnet-merge.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def merged_checkpoint(spec: ModelSpec = ModelSpec(), root: Path | None = None) -> Path:
    """Directory of `spec`'s base with its adapter merged (the base itself if no adapter)."""
    base_path = resolve_base_path(spec.model)
    adapter_path = resolve_adapter_path(spec.adapter)
    if adapter_path is None:
        return base_path
    key = merge_key(base_path, adapter_path)
    target = (root or cache_dir()) / f"{base_path.name}+{adapter_path.name}-{key}"
    if (target / MERGE_INFO_FILE).is_file():
        return target
    write_merged(base_path, adapter_path, target)
    return target


def merge_key(base_path: Path, adapter_path: Path) -> str:
    """16 hex digits: the adapter's content and the base weights' identity."""
    digest = hashlib.sha256()
    update_with_files(digest, adapter_path)
    # Hashing a 7B base's bytes would take minutes: its files' identity suffices.
    for path in sorted(base_path.iterdir()):
        if path.suffix in WEIGHT_SUFFIXES or path.name == "config.json":
            stat = path.stat()
            digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def update_with_files(digest, folder: Path | None) -> None:
    """Feed every file of an adapter directory, names and bytes (adapters are small: MBs)."""
    if folder is None:
        digest.update(b"<none>")
        return
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())


def stored_dtype(base_path: Path) -> str:
    """The dtype the base checkpoint is stored in, so the merge keeps its size."""
    config = json.loads((base_path / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def write_merged(base_path: Path, adapter_path: Path, target: Path) -> None:
    """Merge on CPU and save config + safetensors + tokenizer, atomically (rename)."""
    log.info("merging adapter %s into %s -> %s (once)", adapter_path, base_path, target)
    merge_spec = ModelSpec(model=str(base_path), adapter=str(adapter_path), device="cpu",
                           dtype=stored_dtype(base_path), merge=True)
    loaded = load_model(merge_spec)
    with atomic_dir(target, MERGE_INFO_FILE) as tmp:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        info = {"base": str(base_path), "adapter": str(adapter_path), "name": loaded.name}
        (tmp / MERGE_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
