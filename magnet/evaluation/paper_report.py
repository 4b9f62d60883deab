"""The paper table of a `magnet eval paper` run: markdown, JSON and a chart.

One line per figure: two figures side by side (the metric names them, "first / second":
mostly base / adapted, or the adapter read two ways), the change, and the paper's Llama-2-7B
figures (Khosla et al. 2025, before -> after Magnet) for reference. A row seen in training
(magnet/evaluation/overlap.py) prints no figure. The chart draws one panel per line with its
target and the paper's figure as lines, the adapted figure's 95% interval where its row
measures one, PASS/FAIL/UNSURE, and which direction is better.
"""
from __future__ import annotations

import json
import logging
import textwrap
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from magnet.atomic import atomic_file
from magnet.evaluation.criteria import FAIL, PASS, SEEN, UNSURE, format_criteria

log = logging.getLogger(__name__)

Getter = Callable[[dict], float]


@dataclass(frozen=True)
class Line:
    key: str
    row: str  # the results row it comes from
    metric: str  # "... (first / second)"
    first: float | None
    second: float | None
    labels: tuple[str, str]  # short names of the two figures, for the chart
    change: str  # "ratio" (second / first) or "difference" (second - first)
    better: str  # "lower" or "higher": which way the second figure should go
    paper: str = ""  # the paper's Llama-2-7B figures, before -> after
    paper_value: float | None = None  # the paper's after figure, drawn on the chart
    digits: int = 1
    seen: str | None = None  # why the row was seen in training: no figures then

    def note(self) -> str:
        if self.first is None or self.second is None:
            return ""
        if self.change == "ratio":
            return f"x{self.second / self.first:.2f}" if self.first else "first is 0"
        return f"{self.second - self.first:+.{self.digits}f}"


@dataclass(frozen=True)
class LineSpec:
    line: Line  # its figures left None
    first: Getter
    second: Getter


def spec(key: str, row: str, metric: str, first: Getter, second: Getter, labels=("base", "adapted"),
         change: str = "difference", better: str = "higher", paper: str = "", paper_value: float | None = None,
         digits: int = 1) -> LineSpec:
    return LineSpec(Line(key, row, metric, None, None, labels, change, better, paper, paper_value, digits),
                    first, second)


def at(*keys, scale: float = 1.0) -> Getter:
    """A getter of results[k1][k2]..., times `scale`."""
    def get(results: dict) -> float:
        value = results
        for key in keys:
            value = value[key]
        return scale * value
    return get


# (task, label, paper before -> after): CoNLL-2003 probes, x100
PROBE_LINES = (("pos", "POS accuracy", "91.5 -> 93.3", 93.3), ("chunk", "chunk F1", "88.2 -> 92.6", 92.6),
               ("ner", "NER F1", "96.6 -> 98.3", 98.3))
# (metric key, label, results key, prefixes, paper before -> after, after)
REPETITION_LINES = (
    ("rep_sen", "Rep-Sen", "wikitext", "WikiText 5-word prefixes", "0.0056 -> 0.0151 (x2.7)", 0.0151),
    ("rep_4", "Rep-4", "wikitext", "WikiText 5-word prefixes", "0.0601 -> 0.2047", 0.2047),
    ("rep_sen", "Rep-Sen", "roc", "ROC first-sentence prefixes", "0.0381 -> 0.0737", 0.0737),
    ("rep_4", "Rep-4", "roc", "ROC first-sentence prefixes", "0.0163 -> 0.2573", 0.2573),
)
LR, HYB = "left to right", "hybrid"

SPECS = (
    spec("stsb", "stsb", "STS-B Spearman (base causal / adapted)", at("stsb", "base_causal"), at("stsb", "adapted"),
         paper="63.6 -> 82.9", paper_value=82.9),
    spec("stsb_base_bidirectional", "stsb", "STS-B Spearman, the base read (causally / bidirectionally)",
         at("stsb", "base_causal"), at("stsb", "base_bidirectional"), ("base causal", "base bidir.")),
    *(spec(f"probe_{task}", "conll", f"CoNLL-2003 {label} (probe at the layer select chose: base causal / adapted bidirectional)",
           at("conll", "base_causal", task, "score", scale=100), at("conll", "adapted", task, "score", scale=100),
           paper=paper, paper_value=after) for task, label, paper, after in PROBE_LINES),
    spec("roc_hybrid", "roc", "ROC middle-sentence PPL, adapted (left to right / hybrid fill)",
         at("roc", "adapted_causal"), at("roc", "adapted_hybrid"), (LR, HYB), "ratio", "lower", digits=2),
    spec("roc_wrong_suffix", "roc", "ROC middle-sentence PPL, adapted (hybrid fill / another story's sentences 4-5 "
         "as suffix)", at("roc", "adapted_hybrid"), at("roc", "adapted_wrong_suffix"), (HYB, "wrong suffix"),
         "ratio", "higher", digits=2),
    spec("roc_no_suffix", "roc", "ROC middle-sentence PPL, adapted (left to right / context read as the fill reads "
         "it, no suffix)", at("roc", "adapted_causal"), at("roc", "adapted_no_suffix"), (LR, "no suffix"), "ratio",
         "lower", digits=2),
    spec("roc_causal", "roc", "ROC middle-sentence PPL, left to right (base / adapted)", at("roc", "base_causal"),
         at("roc", "adapted_causal"), change="ratio", better="lower", digits=2),
    spec("roc_base_hybrid", "roc", "ROC middle-sentence PPL (base left to right / adapted hybrid fill)",
         at("roc", "base_causal"), at("roc", "adapted_hybrid"), ("base " + LR, HYB), "ratio", "lower",
         "13.93 -> 9.52", 9.52, 2),
    spec("wikitext", "wikitext", "WikiText-2 PPL, left to right (base / adapted)", at("wikitext", "base"),
         at("wikitext", "adapted"), change="ratio", better="lower", paper="6.4 -> 7.6 (WikiText-103 test)",
         paper_value=7.6, digits=2),
    *(spec(f"{metric}_{key}", "repetition", f"{label}, {prefixes} (base / adapted)", at("repetition", key, "base", metric),
           at("repetition", key, "adapted", metric), change="ratio", better="lower", paper=paper, paper_value=after,
           digits=4) for metric, label, key, prefixes, paper, after in REPETITION_LINES),
    *(spec(f"spaced_{key}", "repetition", f"Punctuation after a space %, {name} generations (base / adapted)",
           at("repetition", key, "base", "spaced_punctuation", scale=100),
           at("repetition", key, "adapted", "spaced_punctuation", scale=100), better="lower")
      for key, name in (("wikitext", "WikiText"), ("roc", "ROC"))),
    spec("cloze", "cloze", "Cloze hit rate % (base left-context guess / adapted greedy infill)",
         at("cloze", "base_left_guess", scale=100), at("cloze", "adapted_infill", scale=100),
         ("base left guess", "infill")),
    spec("cloze_best_of_4", "cloze", "Cloze hit rate % (base left-context guess / adapted infill, best_of 4)",
         at("cloze", "base_left_guess", scale=100), at("cloze", "adapted_infill_best_of_4", scale=100),
         ("base left guess", "best of 4")),
    spec("cloze_left_guess", "cloze", "Cloze hit rate %, left-context guess (base / adapted)",
         at("cloze", "base_left_guess", scale=100), at("cloze", "adapted_left_guess", scale=100)),
)


def value(getter: Getter, results: dict) -> float | None:
    try:
        return float(getter(results))
    except (KeyError, TypeError):
        return None


def table_lines(results: dict) -> list[Line]:
    """The lines of every row in `results` (measured, or seen in training), in table order."""
    lines = []
    for s in SPECS:
        row = results.get(s.line.row)
        if row is None:
            continue
        if "seen_in_training" in row:
            lines.append(replace(s.line, seen=row["seen_in_training"]))
        else:
            lines.append(replace(s.line, first=value(s.first, results), second=value(s.second, results)))
    return lines


def cell(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def data_parts(report: dict) -> list[str]:
    """What each measured row scored, from the numbers it recorded."""
    r, sizes, data = report["results"], report["sizes"], report["data"]
    name = lambda flag: f"{Path(data[flag]['file']).name} ({data[flag]['split'] or 'whole file'})"  # noqa: E731
    measured = {k: row for k, row in r.items() if "seen_in_training" not in row}
    parts = []
    if "stsb" in measured:
        parts.append(f"STS-B: {measured['stsb']['pairs']} pairs of {name('--stsb')}, spread over it")
    if "conll" in measured:
        n = measured["conll"]["adapted"]["sentences"]
        conll = measured["conll"]
        layers = ", ".join(f"{who} layer {conll[key].get('layer', 'last')} of {conll[key].get('layers', '?')}"
                           for who, key in (("base", "base_causal"), ("adapted", "adapted")))
        parts.append(f"CoNLL probes: fit on {n['train']} sentences of {Path(data['--conll-train']['file']).name}'s "
                     f"train documents, layer and checkpoint chosen on {n['selection']} of its select documents "
                     f"({layers}), scored on {n['valid']} sentences of {name('--conll-valid')} "
                     f"({sizes['probe_steps']} steps)")
    if "roc" in measured:
        roc = measured["roc"]
        intervals = "".join(f"; {what} 95% interval over stories x{roc[key][0]:.3f}-x{roc[key][1]:.3f}"
                            for what, key in (("hybrid / left to right", "hybrid_causal_interval"),
                                              ("wrong suffix / hybrid", "wrong_hybrid_interval")) if key in roc)
        parts.append(f"ROC: {roc['stories']} stories of {name('--roc')}, spread over it; wrong suffix: "
                     f"the next story's sentences 4-5{intervals}")
    if "wikitext" in measured:
        w = measured["wikitext"]
        parts.append(f"WikiText-2: {w['tokens']} tokens in {w['windows']} windows of {w['window']} of "
                     f"{name('--wikitext')}")
    if "repetition" in measured:
        rep = measured["repetition"]
        parts.append(f"repetition: greedy, <= {rep['max_tokens']} tokens from {rep['prefixes']['wikitext']} WikiText "
                     f"and {rep['prefixes']['roc']} ROC prefixes of the same splits, per generation then averaged")
    if "cloze" in measured:
        parts.append(f"cloze: {measured['cloze']['items']} items, greedy with /v1/infill's defaults, "
                     f"<= {sizes['fill_tokens']} tokens")
    return parts


def footer(report: dict) -> list[str]:
    r = report["results"]
    adapter = report["model"]["adapter"]
    seconds = ", ".join(f"{name} {row['seconds']:.0f}" for name, row in r.items() if "seconds" in row)
    lines = [f"Adapter: {adapter['name']} (sha256 {adapter['sha256'][:16]}...)." if adapter else "No adapter.",
             f"Split: {report['split']} (magnet/splits.py){', --quick subsamples' if report['quick'] else ''}: "
             + "; ".join(data_parts(report)) + "."]
    seen = [f"{name} ({row['seen_in_training']})" for name, row in r.items() if "seen_in_training" in row]
    if seen:
        lines.append(f"Seen in training, so not reported: {'; '.join(seen)}.")
    missing = [name for name in report.get("rows", []) if name not in r]
    if missing:
        lines.append(f"Not measured yet: {', '.join(missing)} (an interrupted run: --resume finishes it).")
    if seconds:
        total = f"; total {report['seconds']:.0f} s (model loading included)" if "seconds" in report else ""
        lines.append(f"Seconds per row: {seconds}{total}.")
    return lines + report["notes"]


def markdown(report: dict) -> str:
    lines = table_lines(report["results"])
    out = [f"## MAGNET paper table: {report['model']['base']} vs {report['model']['adapted']} "
           f"({report['split']} split)", "",
           "| metric (first / second) | first | second | change | paper (Llama-2-7B, before -> after) |",
           "| --- | ---: | ---: | ---: | --- |"]
    for ln in lines:
        if ln.seen:
            out.append(f"| {ln.metric} | seen in training | | | {ln.paper} |")
        else:
            out.append(f"| {ln.metric} | {cell(ln.first, ln.digits)} | {cell(ln.second, ln.digits)} | {ln.note()} "
                       f"| {ln.paper} |")
    out += [""]
    for paragraph in footer(report):
        out += [paragraph, ""]
    if report.get("criteria"):
        out += ["Targets:", ""] + [f"    {c}" for c in format_criteria(report["criteria"])]
    return "\n".join(out) + "\n"


def write_atomically(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_tables(report: dict, directory: Path) -> list[Path]:
    """paper.json and paper.md (rewritten after every row: an interrupted run keeps its rows)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "paper.json", directory / "paper.md"]
    table = [{**asdict(ln), "note": ln.note()} for ln in table_lines(report["results"])]
    write_atomically(paths[0], json.dumps({**report, "table": table}, indent=2) + "\n")
    write_atomically(paths[1], markdown(report))
    return paths


def write_report(report: dict, directory: Path) -> list[Path]:
    """paper.json, paper.md and (with matplotlib) paper.png."""
    paths = write_tables(report, directory)
    png = directory / "paper.png"
    if plot_table(table_lines(report["results"]), report.get("criteria", []), png, plot_caption(report)):
        paths.append(png)
    return paths


STATUS_COLORS = {PASS: "#2a9d3a", FAIL: "#d62728", UNSURE: "#e69500"}  # a target's line and its panel's title


def panel_values(line: Line, targets: list[dict]) -> list[float]:
    intervals = [x for t in targets for x in (t.get("interval") or ())]
    return [x for x in (line.first, line.second, line.paper_value, *(t["bound"] for t in targets), *intervals)
            if x is not None]


def plot_caption(report: dict) -> str:
    seen = [name for name, row in report["results"].items() if "seen_in_training" in row]
    return (f"{report['model']['base']} vs {report['model']['adapted']}, {report['split']} split"
            + (f"; seen in training, not drawn: {', '.join(seen)}" if seen else ""))


def plot_table(lines: list[Line], criteria: list[dict], png: Path, caption: str = "") -> bool:
    """One panel per measured line: its two figures as bars, each target on it as a dashed line
    (green when met, red when not, orange when unsure; the panel titled by them), the paper's after figure as a
    dotted line, and which way is better. Seen rows, and lines with no target whose figures are
    both 0, get no panel. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install magnet-llm[train]): no %s", png.name)
        return False
    judged = [c for c in criteria if c["status"] != SEEN]
    panels = []
    for ln in lines:
        targets = [c for c in judged if c["line"] == ln.key]
        if ln.seen is None and (targets or ln.first or ln.second):
            panels.append((ln, targets))
    if not panels:
        return False
    columns = 4
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.9 * rows), squeeze=False)
    for ax, (ln, targets) in zip(axes.flat, panels):
        bars = ax.bar(list(ln.labels), [ln.first or 0.0, ln.second or 0.0], color=["#999999", "#3b75af"])
        ax.bar_label(bars, labels=[cell(ln.first, ln.digits), cell(ln.second, ln.digits)], fontsize=7)
        interval = next((t["interval"] for t in targets if t.get("interval")), None)
        if interval is not None and ln.second is not None:  # the adapted figure's 95% interval
            ax.errorbar([1], [ln.second], yerr=[[max(ln.second - interval[0], 0)], [max(interval[1] - ln.second, 0)]],
                        color="black", capsize=3, linewidth=1)
        for t in targets:
            ax.axhline(t["bound"], color=STATUS_COLORS[t["status"]], linestyle="--", linewidth=1.2,
                       label=f"target {t['bound']:.4g} ({t['status']})")
        if ln.paper_value is not None:
            ax.axhline(ln.paper_value, color="#555555", linestyle=":", linewidth=1.2, label="paper, Llama-2-7B")
        if targets or ln.paper_value is not None:
            ax.legend(fontsize=6, loc="best")
        top = max(panel_values(ln, targets))
        ax.set_ylim(0, top * 1.3 if top > 0 else 1.0)  # room for the labels
        verdict = " ".join(sorted({t["status"] for t in targets}))
        direction = "lower is better" if ln.better == "lower" else "higher is better"
        if ln.key == "roc_wrong_suffix":
            direction = "higher: the suffix is read"
        title = "\n".join(textwrap.wrap(f"{verdict + ': ' if verdict else ''}{ln.metric}", 52)) + f"\n({direction})"
        color = next((STATUS_COLORS[status] for status in (FAIL, UNSURE, PASS) if status in verdict), "black")
        ax.set_title(title, fontsize=7, color=color)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if caption:
        fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True
