"""A LoRA that turns the served merged checkpoint into another adapter's model, or the base.

vLLM runs one checkpoint per engine plus any number of LoRAs chosen per request. The
default model is that checkpoint, merged (magnet/merged.py: W0 + s_d B_d A_d, full speed).
Another adapter n on the same base wants W0 + s_n B_n A_n, which is the merged weight plus

    delta = s_n B_n A_n - s_d B_d A_d = [s_n B_n | -s_d B_d] @ [A_n ; A_d]

a LoRA of rank r_n + r_d and scale 1 (alpha = r), exact up to float rounding. The base
served beside the adapters is n = none: delta = -s_d B_d A_d. So one engine with the
default merged serves every adapter per request, with no second engine or weight copy.

    path = delta_adapter(default_adapter, named_adapter)   # cached; None = the base
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from magnet.atomic import atomic_dir
from magnet.embedded import cache_dir
from magnet.merged import update_with_files

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
# peft's key for one LoRA factor: "base_model.model.<module path>.lora_A.weight"
FACTOR_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")


def delta_adapter(merged_adapter: Path, target_adapter: Path | None, root: Path | None = None) -> Path:
    """Directory of the LoRA taking (base + merged_adapter) to (base + target_adapter)."""
    digest = hashlib.sha256()
    for folder in (merged_adapter, target_adapter):
        update_with_files(digest, folder)
    name = f"delta-{merged_adapter.name}-to-{target_adapter.name if target_adapter else 'base'}"
    target = (root or cache_dir()) / f"{name}-{digest.hexdigest()[:16]}"
    if not (target / CONFIG_FILE).is_file():
        write_delta(merged_adapter, target_adapter, target)
    return target


def adapter_rank(folder: Path) -> int:
    return json.loads((folder / CONFIG_FILE).read_text())["r"]


def scaled_factors(folder: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict]:
    """{module path: (s * B  [out, r], A  [r, in])} in fp32, and the adapter's peft config."""
    from safetensors.torch import load_file

    config = json.loads((folder / CONFIG_FILE).read_text())
    unsupported = [key for key in ("rank_pattern", "alpha_pattern") if config.get(key)]
    unsupported += [key for key in ("use_dora", "lora_bias") if config.get(key)]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise ValueError(f"adapter {folder}: only plain LoRA adapters can be served through vLLM "
                         f"(found {', '.join(unsupported) or config.get('peft_type')})")
    r = config["r"]
    scale = config["lora_alpha"] / (r ** 0.5 if config.get("use_rslora") else r)
    tensors = load_file(folder / WEIGHTS_FILE)
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = FACTOR_KEY.match(key)
        if match is None:
            raise ValueError(f"adapter {folder}: unexpected tensor {key} (only LoRA A/B factors are allowed)")
        factors.setdefault(match["module"], {})[match["factor"]] = tensor.float()
    return {module: (scale * ab["B"], ab["A"]) for module, ab in factors.items()}, config


def write_delta(merged_adapter: Path, target_adapter: Path | None, target: Path) -> None:
    from safetensors.torch import save_file

    merged, merged_config = scaled_factors(merged_adapter)
    wanted, wanted_config = scaled_factors(target_adapter) if target_adapter else ({}, {"r": 0})
    rank = merged_config["r"] + wanted_config["r"]
    tensors = {}
    for module in sorted(set(merged) | set(wanted)):
        some_b, some_a = (merged.get(module) or wanted.get(module))
        out_features, in_features = some_b.shape[0], some_a.shape[1]
        b = torch.zeros(out_features, rank)
        a = torch.zeros(rank, in_features)
        if module in wanted:  # + s_n B_n A_n in the first r_n columns/rows
            wanted_b, wanted_a = wanted[module]
            b[:, : wanted_b.shape[1]], a[: wanted_a.shape[0]] = wanted_b, wanted_a
        if module in merged:  # - s_d B_d A_d in the last r_d
            merged_b, merged_a = merged[module]
            b[:, rank - merged_b.shape[1]:], a[rank - merged_a.shape[0]:] = -merged_b, merged_a
        tensors[f"{module}.lora_A.weight"] = a.contiguous()
        tensors[f"{module}.lora_B.weight"] = b.contiguous()
    targets = sorted(set(merged_config["target_modules"]) | set(wanted_config.get("target_modules", [])))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
              "target_modules": targets, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
              "base_model_name_or_path": merged_config.get("base_model_name_or_path"),
              "use_rslora": False, "use_dora": False, "modules_to_save": None}
    with atomic_dir(target, CONFIG_FILE) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
