"""Checkpoints and the final adapter, each written to a temp dir and renamed
into place, so a run killed at any moment leaves either the old or the new
files, never half of one.

    OUTPUT/checkpoints/step-000050/{adapter/, optimizer.pt}
    OUTPUT/adapter/{adapter_config.json, adapter_model.safetensors, magnet.json}
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch

from magnet.atomic import atomic_dir
from magnet.manifest import AdapterManifest
from magnet.permissions import make_readable
from magnet.splits import file_sha256

KEEP_CHECKPOINTS = 2


def latest_checkpoint(output: Path) -> Path | None:
    found = sorted((output / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def publish(target: Path, fill: Callable[[Path], None]) -> Path:
    """`fill(tmp)` writes an adapter dir beside `target`, which then replaces it in one rename,
    world-readable (a container's non-root user must read a mounted adapter)."""
    target = Path(target)
    with atomic_dir(target) as tmp:
        fill(tmp)
        make_readable([tmp, *tmp.rglob("*")])
    return target


def save_lora(model, target: Path) -> None:
    """The adapter's weights and config. `save_embedding_layers=False`: the LoRA targets are
    projections, never the embeddings, and peft's "auto" would look the base up by name (a
    local checkpoint has no hub config) to warn that it cannot tell."""
    model.save_pretrained(target, save_embedding_layers=False)


def save_checkpoint(output: Path, step: int, model, optimizer, manifest: AdapterManifest | None = None) -> Path:
    """checkpoints/step-N/: the adapter (with its manifest, so a later phase started from it
    knows what it is) and the optimizer state for --resume."""
    target = output / "checkpoints" / f"step-{step:06d}"
    with atomic_dir(target) as tmp:
        save_lora(model, tmp / "adapter")
        if manifest is not None:
            manifest.save(tmp / "adapter")
        torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp / "optimizer.pt")
    for stale in sorted((output / "checkpoints").glob("step-??????"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(stale, ignore_errors=True)
    return target


def write_adapter(output: Path, model, loaded, config, steps: int) -> Path:
    """The standard peft adapter dir plus magnet.json, named after the base only
    (no local paths)."""
    model.peft_config["default"].base_model_name_or_path = loaded.base.name

    def fill(tmp: Path) -> None:
        save_lora(model, tmp)
        manifest_for(config, loaded, steps).save(tmp)

    return publish(output / "adapter", fill)


def manifest_for(config, loaded, steps: int) -> AdapterManifest:
    return AdapterManifest(
        base=loaded.base,
        mask_token=config.mask_token,
        instruction=config.instruction,
        pooling="last_token",
        objectives={
            "mntp": {"mask_rate": config.mask_rate, "view_rate": config.mntp_view_rate},
            "sscl": {"temperature": config.temperature, "augmenter": config.augmenter,
                     "pairs": [Path(p).name for p in config.pairs]},
            **({"graded": {"weight": config.graded_weight, "scale": config.graded_scale, "loss": "cosent",
                           "pairs": [Path(p).name for p in config.graded_pairs]}} if config.graded_weight else {}),
            **({"kl": {"weight": config.kl_weight, "to": "base model", "views": "causal"}}
               if config.kl_weight else {}),
            "msg": {"max_spans": config.max_spans, "span_range": list(config.span_range()),
                    "causal_rate": config.causal_rate, "gap_jitter": config.gap_jitter,
                    "trailing_rate": config.trailing_rate, "sentence_rate": config.sentence_rate,
                    "gap_distance": list(config.gap_distance()), "context": config.context},
            "weights": {"before": list(config.weights_before), "after": list(config.weights_after),
                        "switch_at": config.switch_at},
        },
        steps=steps,
        data=training_data_records(config),
        extra={"lora": {"r": config.lora_r, "alpha": config.lora_alpha, "targets": list(config.lora_targets)},
               "max_length": config.max_length, "batch_size": config.batch_size, "lr": config.lr,
               # the files whose sentences training left out (--exclude), by content: whether a
               # report file was kept out is read here, not guessed from the command
               "excluded": [{"file": Path(p).name, "sha256": file_sha256(p)} for p in config.exclude],
               **({"init_adapter": earlier_phase(config.init_adapter)} if config.init_adapter else {})},
    )


def training_data_records(config) -> list[dict]:
    """Each file training read (text and pairs), with its content hash and the split read
    (magnet.splits): what an evaluation checks its own rows against."""
    from magnet.splits import TRAIN, data_record

    paths = list(dict.fromkeys([*config.data, *config.pairs, *config.graded_pairs]))
    return [data_record(path, TRAIN) for path in paths]


def earlier_phase(init_adapter: str) -> dict:
    """What a second phase started from: the first phase's steps, data and settings (its own
    manifest, quality figures left out), so `steps` + these steps is the adapter's whole training."""
    earlier = AdapterManifest.load(Path(init_adapter))
    if earlier is None:  # a plain peft adapter
        return {"name": Path(init_adapter).name}
    settings = {key: value for key, value in earlier.extra.items() if key != "quality"}
    return {"name": Path(init_adapter).name, "steps": earlier.steps, "data": earlier.data, **settings}
