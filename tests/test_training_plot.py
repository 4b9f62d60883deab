"""The training plot (training/plot.py): active objectives only, smoothed, the learning rate,
the quality checks with their direction of better, and the command that draws a run."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from magnet.training.config import TrainConfig
from magnet.training.plot import active_objectives, main, plot_run, quality_panels, smoothed


@pytest.fixture
def run_dir(tmp_path):
    """A 40-step run whose SSCL switches on halfway (weight 0 before: logged as 0.0)."""
    config = TrainConfig.from_dict({"max_steps": 40, "switch_at": 0.5, "output": str(tmp_path)})
    (tmp_path / "config.json").write_text(config.to_json())
    lines = []
    for step in range(1, 41):
        on = config.weights_at(step - 1)[1] != 0
        lines.append(json.dumps({"step": step, "mntp": 7 - step / 10, "sscl": 2.0 + step / 100 if on else 0.0,
                                 "msg": 5 - step / 20, "loss": 1.0, "lr": 1e-4 * min(1.0, step / 5), "seconds": 1}))
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    checks = [{"step": s, "adapted_stsb_spearman": 60 + s / 4, "stsb_pairs": 400, "adapted_roc_ppl_hybrid": 30 - s / 10,
               "base_stsb_spearman": 22.5, "base_roc_ppl_causal": 23.0} for s in (20, 40)]
    (tmp_path / "quality.jsonl").write_text("".join(json.dumps(c) + "\n" for c in checks))
    return tmp_path


def test_sscl_is_off_while_its_weight_is_zero(run_dir):
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    on = active_objectives(run_dir, records)
    assert on["mntp"] == [True] * 40 and on["msg"] == [True] * 40
    assert on["sscl"] == [False] * 20 + [True] * 20
    assert on["graded"] == [False] * 40  # its weight is 0 in the default config


def test_without_a_config_an_objective_logging_zero_is_off(run_dir):
    (run_dir / "config.json").unlink()
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert active_objectives(run_dir, records)["sscl"] == [False] * 20 + [True] * 20


def test_smoothing_averages_recent_points_and_restarts_after_a_gap():
    values = [float(v) for v in range(50)]
    out = smoothed(values)  # window 2
    assert out[0] == 0.0 and out[10] == 9.5
    gapped = smoothed([math.nan] * 3 + [4.0] * 47)
    assert all(math.isnan(v) for v in gapped[:3]) and gapped[3:] == [4.0] * 47


def test_quality_checks_pair_adapted_with_base_per_measure(run_dir):
    checks = [json.loads(line) for line in (run_dir / "quality.jsonl").read_text().splitlines()]
    panels = quality_panels(checks)
    assert sorted(panels) == ["roc_ppl", "stsb_spearman"]  # stsb_pairs is not a measure
    assert panels["roc_ppl"] == {"adapted (hybrid)": [(20, 28.0), (40, 26.0)], "base (causal)": [(20, 23.0), (40, 23.0)]}
    assert panels["stsb_spearman"]["adapted"] == [(20, 65.0), (40, 70.0)]


def test_the_plot_draws_losses_rate_and_one_panel_per_measure(run_dir, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    assert plot_run(run_dir, run_dir / "out.png")
    assert (run_dir / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = figures[0].axes
    assert len(axes) == 4
    losses = axes[0]
    labels = [line.get_label() for line in losses.lines if not line.get_label().startswith("_")]
    assert labels == ["MNTP (smoothed)", "SSCL (smoothed)", "MSG (smoothed)"]
    sscl = next(line for line in losses.lines if line.get_label() == "SSCL (smoothed)")
    assert all(math.isnan(y) for y in sscl.get_ydata()[:20])  # not drawn as a flat 0 while off
    assert all(float(t).is_integer() for t in axes[-1].xaxis.get_major_locator().tick_values(1, 40))
    assert "lower is better" in axes[2].get_ylabel() and "roc_ppl" in axes[2].get_ylabel()
    assert "higher is better" in axes[3].get_ylabel()


def test_a_run_that_never_turns_sscl_on_draws_no_sscl(run_dir, monkeypatch):
    import matplotlib.pyplot as plt

    config = TrainConfig.from_dict({"max_steps": 40, "switch_at": 1.0, "output": str(run_dir)})
    (run_dir / "config.json").write_text(config.to_json())
    (run_dir / "quality.jsonl").unlink()
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_run(run_dir, run_dir / "out.png")
    assert len(figures[0].axes) == 2
    assert "SSCL (smoothed)" not in [line.get_label() for line in figures[0].axes[0].lines]


def test_the_command_draws_a_run_and_names_a_wrong_folder(run_dir, tmp_path_factory, capsys):
    assert main([str(run_dir)]) == 0 and (run_dir / "losses.png").exists()
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(SystemExit):
        main([str(empty)])
    assert "log.jsonl: no such file" in capsys.readouterr().err
    out = subprocess.run([sys.executable, "-m", "magnet.training.plot", str(run_dir), str(run_dir / "b.png")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and (run_dir / "b.png").exists()
