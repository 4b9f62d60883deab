"""Ship a trained adapter (as the package default, or anywhere): the LoRA weights in float16,
half the size (the loader casts them to the model's dtype when it merges), with the peft
config and magnet.json beside them, world-readable, written atomically.

    python -m magnet.training.ship runs/magnet/adapter magnet/defaults/adapter
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Callable

WEIGHTS = "adapter_model.safetensors"
KEPT_FILES = ("adapter_config.json", "magnet.json")


def require_adapter(source: Path) -> None:
    missing = [name for name in (WEIGHTS, *KEPT_FILES) if not (source / name).is_file()]
    if missing:
        raise SystemExit(f"{source} is not a trained adapter: {', '.join(missing)} missing")


def publish(target: Path, fill: Callable[[Path], None]) -> Path:
    """`fill(tmp)` writes an adapter dir beside `target`, which it then replaces in one rename,
    world-readable (a container's non-root user must read a mounted adapter)."""
    from magnet.permissions import make_readable
    from magnet.training.checkpoints import replace_dir

    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    make_readable([tmp, *tmp.iterdir()])
    replace_dir(tmp, target)
    return target


def ship_adapter(source: Path, target: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    source = Path(source)
    require_adapter(source)

    def fill(tmp: Path) -> None:
        tensors = {k: v.to(torch.float16) if v.is_floating_point() else v
                   for k, v in load_file(source / WEIGHTS).items()}
        save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
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
