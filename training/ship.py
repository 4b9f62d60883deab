"""Ship a trained adapter (as the package default, or anywhere): the LoRA weights in float16,
half the size (the loader casts them to the model's dtype when it merges), with the peft
config and magnet.json beside them, world-readable, written atomically.

    python -m magnet.training.ship runs/magnet/adapter magnet/defaults/adapter
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from magnet.lora_delta import CONFIG_FILE, WEIGHTS_FILE
from magnet.manifest import MANIFEST_FILE

KEPT_FILES = (CONFIG_FILE, MANIFEST_FILE)


def require_adapter(source: Path) -> None:
    missing = [name for name in (WEIGHTS_FILE, *KEPT_FILES) if not (source / name).is_file()]
    if missing:
        raise SystemExit(f"{source} is not a trained adapter: {', '.join(missing)} missing")


def ship_adapter(source: Path, target: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from magnet.training.checkpoints import publish

    source = Path(source)
    require_adapter(source)

    def fill(tmp: Path) -> None:
        tensors = {k: v.to(torch.float16) if v.is_floating_point() else v
                   for k, v in load_file(source / WEIGHTS_FILE).items()}
        save_file(tensors, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        for name in KEPT_FILES:
            shutil.copy2(source / name, tmp / name)

    return publish(target, fill)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m magnet.training.ship", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a trained adapter dir (RUN/adapter)")
    parser.add_argument("target", type=Path, help="where to write it (e.g. magnet/defaults/adapter)")
    args = parser.parse_args(argv)
    print(f"shipped {ship_adapter(args.source, args.target)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
