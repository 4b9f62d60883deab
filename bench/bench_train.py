"""Training step speed: fp32 vs the fast path (bf16 autocast where the hardware has it), in one run.

    python bench/bench_train.py [--steps 50] [--batch-size 8] [--max-length 96] [--lora-r 64]
                                [--dtypes float32 bfloat16] [--context bidirectional] [--lora-dropout P]
                                [--compile-layers]

Both runs train the same LoRA from the same seed on the same batches (WikiText-2 valid, train
split), so their losses must agree within bf16 noise. `--compile-layers` adds a run of the last
dtype with `magnet train --compile-layers` (each decoder layer through torch.compile; its first
step, which compiles, is printed apart). Prints seconds per step (median after the first, which
warms up) and the losses of every step side by side. Ratios are taken within this run; run it
on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from magnet.evaluation.data_files import DATA_FLAGS, find_data_file
from magnet.training.config import TrainConfig
from magnet.training.loop import train


def run(name: str, dtype: str, compiled: bool, args, output: Path) -> list[dict]:
    data = str(find_data_file(DATA_FLAGS["--wikitext"][0], "--wikitext"))
    config = TrainConfig(data=(data,), output=str(output / name), max_steps=args.steps, compile_layers=compiled,
                         batch_size=args.batch_size, max_length=args.max_length, lora_r=args.lora_r,
                         lora_alpha=2 * args.lora_r, lr=1e-4, dtype=dtype, context=args.context,
                         mntp_view_rate=0.3 if args.context == "causal" else 0.0, switch_at=1.0,
                         checkpoint_every=10**6, quality_check=False, device="cpu",
                         lora_dropout=args.lora_dropout)
    train(config, progress=False)
    return [json.loads(line) for line in (output / name / "log.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--context", default="bidirectional")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--lora-dropout", type=float, default=TrainConfig.lora_dropout,
                        help="LoRA dropout (default: training's)")
    parser.add_argument("--compile-layers", action="store_true",
                        help="also run the last dtype with each decoder layer through torch.compile")
    args = parser.parse_args()
    paths = [(dtype, dtype, False) for dtype in args.dtypes]  # (name, dtype, compiled layers)
    if args.compile_layers:
        paths.append((f"{args.dtypes[-1]}, compiled layers", args.dtypes[-1], True))
    with tempfile.TemporaryDirectory() as tmp:
        logs = {name: run(name, dtype, compiled, args, Path(tmp)) for name, dtype, compiled in paths}
    seconds = {d: statistics.median(r["seconds"] for r in log[1:] or log) for d, log in logs.items()}
    names = [name for name, _, _ in paths]
    first = names[0]
    print(f"\nLoRA r {args.lora_r}, dropout {args.lora_dropout}, batch {args.batch_size} x {args.max_length} tokens, "
          f"{args.steps} steps, context {args.context}\n")
    print("| path | s/step (median) | speed-up | first step (s) |\n| --- | ---: | ---: | ---: |")
    for name in names:
        print(f"| {name} | {seconds[name]:.2f} | {seconds[first] / seconds[name]:.2f}x | {logs[name][0]['seconds']:.1f} |")
    print("\n| step | " + " | ".join(f"{name} loss" for name in names) + " |")
    print("| ---: |" + " ---: |" * len(names))
    for step in range(args.steps):
        print(f"| {step + 1} | " + " | ".join(f"{logs[name][step]['loss']:.4f}" for name in names) + " |")
    gaps = [abs(logs[name][s]["loss"] - logs[first][s]["loss"]) for name in names[1:] for s in range(args.steps)]
    if gaps:
        print(f"\nlargest loss difference to {first}: {max(gaps):.4f}")


if __name__ == "__main__":
    main()
