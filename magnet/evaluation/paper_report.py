"""The paper table of a `magnet eval paper` run: markdown, JSON and a bar chart.

One line per figure, base and adapted side by side, with the change and the paper's
Llama-2-7B figures (Khosla et al. 2025, before -> after Magnet) for reference.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from magnet.evaluation.criteria import format_criteria

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Line:
    metric: str
    base: float | None
    adapted: float | None
    change: str  # "ratio" (adapted / base) or "difference" (adapted - base)
    paper: str = ""  # the paper's Llama-2-7B figures
    digits: int = 1

    def note(self) -> str:
        if self.base is None or self.adapted is None:
            return ""
        if self.change == "ratio":
            return f"x{self.adapted / self.base:.2f}" if self.base else "base is 0"
        return f"{self.adapted - self.base:+.{self.digits}f}"


# (label, results key, metric key, prefixes, the paper's Llama-2-7B before -> after)
REPETITION_LINES = (
    ("Rep-Sen", "wikitext", "rep_sen", "WikiText 5-word prefixes", "0.0056 -> 0.0151 (x2.7)"),
    ("Rep-4", "wikitext", "rep_4", "WikiText 5-word prefixes", "0.0601 -> 0.2047"),
    ("Rep-Sen", "roc", "rep_sen", "ROC first-sentence prefixes", "0.0381 -> 0.0737"),
    ("Rep-4", "roc", "rep_4", "ROC first-sentence prefixes", "0.0163 -> 0.2573"),
)
# (task, label, paper): CoNLL-2003 probes, x100
PROBE_LINES = (("pos", "POS accuracy", "91.5 -> 93.3"), ("chunk", "chunk F1", "88.2 -> 92.6"),
               ("ner", "NER F1", "96.6 -> 98.3"))


def table_lines(r: dict) -> list[Line]:
    sts, conll, roc, wiki, rep, cloze = (r[k] for k in ("stsb", "conll", "roc", "wikitext", "repetition", "cloze"))
    lines = [
        Line("STS-B dev Spearman (base causal / adapted)", sts["base_causal"], sts["adapted"], "difference",
             "63.6 -> 82.9"),
        Line("STS-B dev Spearman, base read bidirectionally", sts["base_bidirectional"], None, "difference"),
    ]
    lines += [Line(f"CoNLL-2003 {label} (probe: base causal / adapted)", 100 * conll["base_causal"][task]["score"],
                   100 * conll["adapted"][task]["score"], "difference", paper) for task, label, paper in PROBE_LINES]
    lines += [
        Line("ROC middle-sentence PPL (base left to right / adapted hybrid)", roc["base_causal"],
             roc["adapted_hybrid"], "ratio", "13.93 -> 9.52", 2),
        Line("ROC middle-sentence PPL, both left to right", roc["base_causal"], roc["adapted_causal"], "ratio", "", 2),
        Line("WikiText-2 valid PPL, left to right", wiki["base"], wiki["adapted"], "ratio",
             "6.4 -> 7.6 (WikiText-103 test)", 2),
    ]
    lines += [Line(f"{label}, {prefixes}", rep[key]["base"][metric], rep[key]["adapted"][metric], "ratio", paper, 4)
              for label, key, metric, prefixes, paper in REPETITION_LINES]
    lines += [Line(f"Punctuation after a space %, {prefixes} generations", 100 * rep[key]["base"]["spaced_punctuation"],
                   100 * rep[key]["adapted"]["spaced_punctuation"], "difference")
              for key, prefixes in (("wikitext", "WikiText"), ("roc", "ROC"))]
    lines += [
        Line("Cloze hit rate % (base left-context guess / adapted infill)", 100 * cloze["base_left_guess"],
             100 * cloze["adapted_infill"], "difference"),
        Line("Cloze hit rate % (base left-context guess / adapted infill, best_of 4)",
             100 * cloze["base_left_guess"], 100 * cloze["adapted_infill_best_of_4"], "difference"),
        Line("Cloze hit rate %, left-context guess of each", 100 * cloze["base_left_guess"],
             100 * cloze["adapted_left_guess"], "difference"),
    ]
    return lines


def cell(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def footer(report: dict) -> list[str]:
    r, sizes = report["results"], report["sizes"]
    conll = r["conll"]["adapted"]["sentences"]
    seconds = ", ".join(f"{name} {row['seconds']:.0f}" for name, row in r.items())
    adapter = report["model"]["adapter"]
    lines = [
        f"Adapter: {adapter['name']} (sha256 {adapter['sha256'][:16]}...)." if adapter else "No adapter.",
        f"Subsamples{' (--quick)' if report['quick'] else ''}: STS-B dev {r['stsb']['pairs']} pairs (spread over the "
        f"file); CoNLL probes fit on {conll['train']} train sentences, checkpoint chosen on the next "
        f"{conll['selection']} train sentences, scored on the first {conll['valid']} valid sentences "
        f"({sizes['probe_steps']} steps); ROC: the last {r['roc']['stories']} stories (held out from training); "
        f"WikiText-2: {r['wikitext']['tokens']} tokens in {r['wikitext']['windows']} windows of "
        f"{r['wikitext']['window']}; repetition: greedy, <= {r['repetition']['max_tokens']} tokens from "
        f"{r['repetition']['prefixes']['wikitext']} WikiText and {r['repetition']['prefixes']['roc']} ROC prefixes, "
        f"per generation then averaged; cloze: {r['cloze']['items']} items, greedy with /v1/infill's defaults, <= {sizes['fill_tokens']} tokens.",
        f"Seconds per row: {seconds}; total {report['seconds']:.0f} s (model loading included).",
    ]
    return lines + report["notes"]


def markdown(report: dict) -> str:
    lines = table_lines(report["results"])
    out = [f"## MAGNET paper table: {report['model']['base']} vs {report['model']['adapted']}", "",
           "| metric | base | adapted | change | paper (Llama-2-7B) |", "| --- | ---: | ---: | ---: | --- |"]
    out += [f"| {ln.metric} | {cell(ln.base, ln.digits)} | {cell(ln.adapted, ln.digits)} | {ln.note()} | {ln.paper} |"
            for ln in lines]
    out += [""]
    for paragraph in footer(report):
        out += [paragraph, ""]
    out += ["Targets:", ""] + [f"    {c}" for c in format_criteria(report["criteria"])]
    return "\n".join(out) + "\n"


def write_report(report: dict, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "paper.json", directory / "paper.md"]
    table = [{**asdict(ln), "note": ln.note()} for ln in table_lines(report["results"])]
    paths[0].write_text(json.dumps({**report, "table": table}, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    png = directory / "paper.png"
    if plot_table(table_lines(report["results"]), png):
        paths.append(png)
    return paths


def plot_table(lines: list[Line], png: Path) -> bool:
    """One small bar pair per line (the figures have different scales); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install magnet-llm[train]): no %s", png.name)
        return False
    pairs = [ln for ln in lines if ln.base is not None and ln.adapted is not None]
    columns = 4
    rows = -(-len(pairs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax, ln in zip(axes.flat, pairs):
        bars = ax.bar(["base", "adapted"], [ln.base, ln.adapted], color=["#999999", "#3b75af"])
        ax.bar_label(bars, fmt=f"%.{ln.digits}f", fontsize=7)
        ax.margins(y=0.15)  # room for the labels
        ax.set_title(ln.metric, fontsize=7, wrap=True)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True
