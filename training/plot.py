"""Draw a training run to a PNG: the losses, the learning rate and the quality checks.

    python -m magnet.training.plot RUN_DIR [OUT.png]     # default RUN_DIR/losses.png

Reads what `magnet train --output RUN_DIR` writes: log.jsonl (one record per step:
mntp, sscl, msg, graded, kl, loss, lr), config.json (which objectives are on at each step) and,
when there is one, quality.jsonl (the periodic quality checks: adapted vs base).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

OBJECTIVES = ("mntp", "sscl", "msg")  # the order of TrainConfig's weights
# losses with their own weight, the same at every step: log key -> TrainConfig field
CONSTANT_WEIGHTS = {"graded": "graded_weight", "kl": "kl_weight"}
SMOOTH_POINTS = 25  # a curve is smoothed over about 1/25 of the run
# quality.jsonl keys are "{adapted|base}_{data}_{measure}[_{mode}]"; the pair is drawn in one panel
QUALITY_KEY = re.compile(r"^(adapted|base)_([a-z0-9]+_[a-z0-9]+)(?:_([a-z]+))?$")
LOWER_IS_BETTER = ("ppl",)  # a measure naming one of these is better when lower


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def active_objectives(run_dir: Path, records: list[dict]) -> dict[str, list[bool]]:
    """{objective: on at each record's step}: its weight in config.json is not 0 (without a
    config.json: its loss is not exactly 0, which is what an objective that is off logs)."""
    config_path = run_dir / "config.json"
    if config_path.exists():
        from magnet.training.config import TrainConfig

        config = TrainConfig.from_file(config_path)
        weights = [config.weights_at(r["step"] - 1) for r in records]  # records count steps from 1
        active = {name: [w[i] != 0 for w in weights] for i, name in enumerate(OBJECTIVES)}
        constant = {name: [getattr(config, field) != 0] * len(records) for name, field in CONSTANT_WEIGHTS.items()}
        return {**active, **constant}
    return {name: [r.get(name, 0.0) != 0.0 for r in records] for name in (*OBJECTIVES, *CONSTANT_WEIGHTS)}


def smoothed(values: list[float]) -> list[float]:
    """Trailing mean over a window of about len/SMOOTH_POINTS points (NaN gaps restart it)."""
    window = max(1, round(len(values) / SMOOTH_POINTS))
    out, recent = [], []
    for value in values:
        recent = [] if value != value else (recent + [value])[-window:]
        out.append(sum(recent) / len(recent) if recent else float("nan"))
    return out


def quality_panels(checks: list[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{measure: {"adapted[ (mode)]" | "base[ (mode)]": [(step, value)]}} from quality.jsonl."""
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for check in checks:
        for key, value in check.items():
            match = QUALITY_KEY.match(key)
            if match and isinstance(value, (int, float)):
                label = match[1] + (f" ({match[3]})" if match[3] else "")
                panels.setdefault(match[2], {}).setdefault(label, []).append((check["step"], float(value)))
    return panels


def plot_run(run_dir: Path, png: Path) -> bool:
    """Draw the run; False (nothing drawn) when it has no log records yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = read_jsonl(run_dir / "log.jsonl")
    if not records:
        return False
    panels = quality_panels(read_jsonl(run_dir / "quality.jsonl"))
    rows = 2 + len(panels)
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3.2 + 2.2 * (rows - 1)), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1] + [2] * len(panels)})
    steps = [r["step"] for r in records]
    losses = axes[0]
    for name, on in active_objectives(run_dir, records).items():
        if not any(on):
            continue  # never active in this run (e.g. SSCL with weight 0): not drawn
        values = [r[name] if active else float("nan") for r, active in zip(records, on)]
        (line,) = losses.plot(steps, smoothed(values), label=f"{name.upper()} (smoothed)", linewidth=2)
        losses.plot(steps, values, color=line.get_color(), alpha=0.25, linewidth=1)
    losses.set_ylabel("loss (lower is better)")
    losses.set_title(f"{run_dir.name}: {steps[-1]} steps (faint: each step)")
    losses.legend(loc="upper right")
    rate = axes[1]
    rate.plot(steps, [r["lr"] for r in records], color="gray")
    rate.set_ylabel("learning rate")
    rate.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax, (measure, series) in zip(axes[2:], sorted(panels.items())):
        lower = any(word in measure for word in LOWER_IS_BETTER)
        for label, points in sorted(series.items()):
            adapted = label.startswith("adapted")
            x, y = zip(*points)
            ax.plot(x, y, "o-" if adapted else "s--", label=label, color="tab:blue" if adapted else "tab:gray")
        ax.set_ylabel(f"{measure}\n({'lower' if lower else 'higher'} is better)")
        ax.legend(loc="best")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


def plot_losses(log_path: Path, png: Path) -> None:
    """The training loop's call: the run of this log.jsonl."""
    plot_run(Path(log_path).parent, Path(png))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m magnet.training.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a `magnet train --output` folder (log.jsonl, config.json, "
                        "quality.jsonl)")
    parser.add_argument("png", type=Path, nargs="?", help="the PNG to write (default RUN_DIR/losses.png)")
    args = parser.parse_args(argv)
    if not (args.run_dir / "log.jsonl").is_file():
        parser.error(f"{args.run_dir}/log.jsonl: no such file; give the folder `magnet train --output` wrote")
    png = args.png or args.run_dir / "losses.png"
    if not plot_run(args.run_dir, png):
        parser.error(f"{args.run_dir}/log.jsonl has no steps yet")
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
