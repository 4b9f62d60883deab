"""Draw the per-objective losses of log.jsonl to a PNG."""
from __future__ import annotations

import json
from pathlib import Path


def plot_losses(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    if not records:
        return
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("mntp", "sscl", "msg"):
        ax.plot(steps, [r[name] for r in records], label=name.upper())
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
