"""Interpolate two LoRA adapters' weight updates exactly: ΔW = (1 - t)·ΔW₁ + t·ΔW₂.

A later phase trades one skill for another: the SSCL phase sharpens sentence vectors and
costs infill perplexity. Pulling its weights part of the way back toward the phase it started
from (WiSE-FT, Wortsman et al. 2022) keeps most of the gain for a fraction of the cost, with
no training; `magnet eval` then measures the mix like any adapter.

Mixing the factors themselves would not do it: ((1-t)B₁ + tB₂)((1-t)A₁ + tA₂) has cross
terms B₁A₂, B₂A₁ that are a model no run trained. Instead the mix is a LoRA of twice the
rank whose product is the mixture of the two updates (s = alpha / r, kept by doubling alpha):

    A = [A₁ ; A₂]   (2r, in)        B = [(1-t)·B₁ | t·B₂]   (out, 2r)
    s·B·A = (1-t)·s·B₁A₁ + t·s·B₂A₂

    python -m magnet.training.interpolate RUN3/checkpoints/step-000120/adapter RUN4/adapter \
        --toward 0.6 RUN4/mix-0.6
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from magnet.lora_delta import CONFIG_FILE, WEIGHTS_FILE
from magnet.training.ship import require_adapter

# adapter_config.json fields that must agree for the factors to be the same shapes and scales
MATCHING_FIELDS = ("peft_type", "r", "lora_alpha", "target_modules", "use_dora", "use_rslora",
                   "rank_pattern", "alpha_pattern")


def peft_config(adapter: Path) -> dict:
    path = adapter / CONFIG_FILE
    if not path.is_file() or not (adapter / WEIGHTS_FILE).is_file():
        raise SystemExit(f"{adapter} is not a LoRA adapter: it needs {WEIGHTS_FILE} and {CONFIG_FILE}")
    return json.loads(path.read_text())


def require_same_shape(start: Path, end: Path, config_a: dict, config_b: dict, a: dict, b: dict) -> None:
    differ = [f"{f}: {config_a.get(f)!r} != {config_b.get(f)!r}" for f in MATCHING_FIELDS
              if _canonical(config_a.get(f)) != _canonical(config_b.get(f))]
    if a.keys() != b.keys():
        differ.append(f"weights: {len(a.keys() ^ b.keys())} tensor names differ")
    differ += [f"{k}: shape {tuple(a[k].shape)} != {tuple(b[k].shape)}"
               for k in a.keys() & b.keys() if a[k].shape != b[k].shape][:3]
    if differ:
        raise SystemExit(f"{start} and {end} cannot be interpolated: " + "; ".join(differ))


def _canonical(value):
    return sorted(value) if isinstance(value, list) else value  # target_modules order is free


def mixed_factors(a: dict, b: dict, toward: float) -> dict:
    """{name: tensor} of the rank-2r LoRA whose update is (1 - toward)·a's + toward·b's (float32)."""
    tensors = {}
    for name in a:
        if ".lora_A." in name:
            tensors[name] = torch.cat([a[name].float(), b[name].float()], dim=0)  # (2r, in)
        elif ".lora_B." in name:
            tensors[name] = torch.cat([(1.0 - toward) * a[name].float(), toward * b[name].float()], dim=1)  # (out, 2r)
        else:
            raise SystemExit(f"{name}: only lora_A / lora_B factors can be mixed")
    return {k: v.contiguous() for k, v in tensors.items()}


def interpolate_adapters(start: Path, end: Path, toward: float, target: Path) -> Path:
    """(1 - toward)·start + toward·end of every weight update, as one LoRA of twice the rank;
    `end`'s config (rank and alpha doubled, so alpha / r stays) and manifest, which records
    the mix (its quality figures, measured on `end`, are dropped)."""
    from safetensors.torch import load_file, save_file

    from magnet.manifest import AdapterManifest
    from magnet.training.checkpoints import earlier_phase, publish

    start, end = Path(start), Path(end)
    if not 0.0 <= toward <= 1.0:
        raise SystemExit(f"--toward {toward}: use a fraction from 0 (the start) to 1 (the end)")
    require_adapter(end)
    config_a, config_b = peft_config(start), peft_config(end)  # both checked before any weights load
    a, b = load_file(start / WEIGHTS_FILE), load_file(end / WEIGHTS_FILE)
    require_same_shape(start, end, config_a, config_b, a, b)
    if config_b.get("use_dora") or config_b.get("use_rslora") or config_b.get("rank_pattern") or config_b.get("alpha_pattern"):
        raise SystemExit(f"{end}: only plain LoRA (one rank and alpha, no DoRA or rsLoRA) can be mixed")
    manifest = AdapterManifest.load(end)
    extra = {k: v for k, v in manifest.extra.items() if k != "quality"}
    mixed = replace(manifest, extra={**extra, "interpolated": {"toward": toward, "start": earlier_phase(str(start))}})

    config = {**config_b, "r": 2 * config_b["r"], "lora_alpha": 2 * config_b["lora_alpha"]}

    def fill(tmp: Path) -> None:
        save_file(mixed_factors(a, b, toward), tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        mixed.save(tmp)

    return publish(target, fill)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m magnet.training.interpolate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("start", type=Path, help="the adapter the later phase started from (a checkpoint's adapter/)")
    parser.add_argument("end", type=Path, help="the later phase's adapter (RUN/adapter)")
    parser.add_argument("target", type=Path, help="where to write the mix")
    parser.add_argument("--toward", type=float, required=True,
                        help="how far from start toward end: 0 is start, 1 is end")
    args = parser.parse_args(argv)
    print(f"wrote {interpolate_adapters(args.start, args.end, args.toward, args.target)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
