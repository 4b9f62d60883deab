"""Interpolate two LoRA adapters of one training run, factor by factor: (1 - t)·A + t·B.

A later phase trades one skill for another: the SSCL phase sharpens sentence vectors and
costs infill perplexity. Pulling its weights part of the way back toward the phase it started
from (WiSE-FT, Wortsman et al. 2022) keeps most of the gain for a fraction of the cost, with
no training; `magnet eval` then measures the mix like any adapter. Interpolating the A and B
factors separately is sound only when one adapter continued the other (or both continued one
start), so that their factors still line up; adapters of different shapes are refused.

    python -m magnet.training.interpolate RUN3/checkpoints/step-000120/adapter RUN4/adapter \
        --toward 0.6 RUN4/mix-0.6
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

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


def interpolate_adapters(start: Path, end: Path, toward: float, target: Path) -> Path:
    """(1 - toward)·start + toward·end for every LoRA factor, in float32; `end`'s config and
    manifest, which records the mix (its quality figures, measured on `end`, are dropped)."""
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
    manifest = AdapterManifest.load(end)
    extra = {k: v for k, v in manifest.extra.items() if k != "quality"}
    mixed = replace(manifest, extra={**extra, "interpolated": {"toward": toward, "start": earlier_phase(str(start))}})

    def fill(tmp: Path) -> None:
        tensors = {k: ((1.0 - toward) * a[k].float() + toward * b[k].float()).contiguous() for k in a}
        save_file(tensors, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        shutil.copy2(end / CONFIG_FILE, tmp / CONFIG_FILE)
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
