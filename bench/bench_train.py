"""Training step speed: fp32 vs the fast path (bf16 autocast where the hardware has it), in one run.

    python bench/bench_train.py [--steps 50] [--batch-size 8] [--max-length 96] [--lora-r 64]
                                [--dtypes float32 bfloat16] [--context bidirectional] [--lora-dropout P]

Both runs train the same LoRA from the same seed on the same batches (WikiText-2 valid, train
split), so their losses must agree within bf16 noise. Prints seconds per step (median after the
first, which warms up) and the losses of every step side by side. Ratios are taken within this
run; run it on an otherwise idle machine.
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


def run(dtype: str, args, output: Path) -> list[dict]:
    data = str(find_data_file(DATA_FLAGS["--wikitext"][0], "--wikitext"))
    config = TrainConfig(data=(data,), output=str(output / dtype), max_steps=args.steps,
                         batch_size=args.batch_size, max_length=args.max_length, lora_r=args.lora_r,
                         lora_alpha=2 * args.lora_r, lr=1e-4, dtype=dtype, context=args.context,
                         mntp_view_rate=0.3 if args.context == "causal" else 0.0, switch_at=1.0,
                         checkpoint_every=10**6, quality_check=False, device="cpu",
                         lora_dropout=args.lora_dropout)
    train(config, progress=False)
    return [json.loads(line) for line in (output / dtype / "log.jsonl").read_text().splitlines()]


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logs = {dtype: run(dtype, args, Path(tmp)) for dtype in args.dtypes}
    seconds = {d: statistics.median(r["seconds"] for r in log[1:] or log) for d, log in logs.items()}
    first = args.dtypes[0]
    print(f"\nLoRA r {args.lora_r}, dropout {args.lora_dropout}, batch {args.batch_size} x {args.max_length} tokens, "
          f"{args.steps} steps, context {args.context}\n")
    print("| dtype | s/step (median) | speed-up |\n| --- | ---: | ---: |")
    for dtype in args.dtypes:
        print(f"| {dtype} | {seconds[dtype]:.2f} | {seconds[first] / seconds[dtype]:.2f}x |")
    print("\n| step | " + " | ".join(f"{d} loss" for d in args.dtypes) + " |")
    print("| ---: |" + " ---: |" * len(args.dtypes))
    for step in range(args.steps):
        print(f"| {step + 1} | " + " | ".join(f"{logs[d][step]['loss']:.4f}" for d in args.dtypes) + " |")
    gaps = [abs(logs[d][s]["loss"] - logs[first][s]["loss"]) for d in args.dtypes[1:] for s in range(args.steps)]
    if gaps:
        print(f"\nlargest loss difference to {first}: {max(gaps):.4f}")


if __name__ == "__main__":
    main()
