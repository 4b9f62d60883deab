"""The project's targets for an adapted model, checked on the numbers of `magnet eval paper`.

Each target compares one adapted figure with a bound (a fixed number, or a multiple of a
figure on the same data: the base's, or the same adapter read another way); a missing figure
fails its target. A target whose row was seen in training (magnet/evaluation/overlap.py) is
neither passed nor failed: it is marked SEEN, since a figure on training data proves nothing.
Where a row measures its figure's 95% interval over the items it scores
(magnet/evaluation/intervals.py) and the bound lies inside it, the target is marked UNSURE:
the point figure passes or fails, another sample of the split could say the opposite.
The targets are to be met on the *report* split (magnet/splits.py).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable

ROC_HYBRID_RATIO = 0.90  # hybrid fill PPL at most this times the same adapter's left-to-right PPL
STSB_MIN = 82.0  # STS-B dev Spearman x100
WIKITEXT_PPL_RATIO = 1.10  # left-to-right PPL at most this times the base's
REP4_RATIO = 1.2  # Rep-4 at most this times the base's
SPACED_PUNCTUATION_SLACK = 1.0  # percentage points of " ." / " ," above the base's own rate
CLOZE_MIN = 60.0  # greedy cloze hit rate, %

Getter = Callable[[dict], float]
IntervalGetter = Callable[[dict], "tuple[float, float] | list[float]"]


@dataclass(frozen=True)
class Target:
    text: str
    row: str  # the results row it reads (a seen row is not judged)
    line: str  # the table line it is drawn on (paper_report.Line.key)
    value: Getter  # the adapted model's figure
    bound: Getter  # what it is compared with
    compare: str  # "<=", ">=" or ">"
    interval: IntervalGetter | None = None  # the 95% interval of `value`, where the row measures one


COMPARE = {"<=": operator.le, ">=": operator.ge, ">": operator.gt}


def probe(task: str, who: str) -> Getter:
    return lambda r: 100 * r["conll"][who][task]["score"]  # x100, as in the table


def probe_interval(task: str) -> IntervalGetter:
    """The adapted probe's interval: the base's score plus the interval of the difference."""
    return lambda r: [probe(task, "base_causal")(r) + x for x in r["conll"]["difference_intervals"][task]]


def repetition(prefixes: str, who: str) -> Getter:
    return lambda r: r["repetition"][prefixes][who]["rep_4"]


def spaced(prefixes: str, who: str) -> Getter:
    return lambda r: 100 * r["repetition"][prefixes][who]["spaced_punctuation"]


def roc(reading: str) -> Getter:
    return lambda r: r["roc"][reading]


def cloze(key: str) -> Getter:
    return lambda r: 100 * r["cloze"][key]


def cloze_interval(r: dict) -> list[float]:
    return [100 * x for x in r["cloze"]["adapted_infill_interval"]]


def scaled(interval: IntervalGetter, by: Getter) -> IntervalGetter:
    """An interval of a ratio, in the units of the figure it multiplies (the ratio's denominator)."""
    return lambda r: [x * by(r) for x in interval(r)]


TARGETS = (
    Target(f"ROC hybrid fill PPL <= {ROC_HYBRID_RATIO} x the same adapter's left-to-right PPL", "roc", "roc_hybrid",
           roc("adapted_hybrid"), lambda r: ROC_HYBRID_RATIO * roc("adapted_causal")(r), "<=",
           scaled(roc("hybrid_causal_interval"), roc("adapted_causal"))),
    Target("ROC PPL with another story's sentences 4-5 above the true suffix's (the suffix is read)", "roc",
           "roc_wrong_suffix", roc("adapted_wrong_suffix"), roc("adapted_hybrid"), ">",
           scaled(roc("wrong_hybrid_interval"), roc("adapted_hybrid"))),
    *(Target(f"{name} above the base causal probe", "conll", f"probe_{task}", probe(task, "adapted"),
             probe(task, "base_causal"), ">", probe_interval(task))
      for task, name in (("pos", "POS accuracy"), ("chunk", "chunk F1"), ("ner", "NER F1"))),
    Target(f"STS-B Spearman >= {STSB_MIN:g}", "stsb", "stsb", lambda r: r["stsb"]["adapted"], lambda r: STSB_MIN, ">=",
           lambda r: r["stsb"]["adapted_interval"]),
    Target(f"WikiText-2 PPL <= {WIKITEXT_PPL_RATIO} x base", "wikitext", "wikitext",
           lambda r: r["wikitext"]["adapted"], lambda r: WIKITEXT_PPL_RATIO * r["wikitext"]["base"], "<=",
           scaled(lambda r: r["wikitext"]["ratio_interval"], lambda r: r["wikitext"]["base"])),
    *(Target(f"Rep-4 ({prefixes} prefixes) <= {REP4_RATIO} x base", "repetition", f"rep_4_{prefixes}",
             repetition(prefixes, "adapted"), lambda r, p=prefixes: REP4_RATIO * repetition(p, "base")(r), "<=",
             scaled(lambda r, p=prefixes: r["repetition"][p]["rep_4_ratio_interval"], repetition(prefixes, "base")))
      for prefixes in ("wikitext", "roc")),
    *(Target(f"punctuation after a space ({prefixes} generations) <= base + {SPACED_PUNCTUATION_SLACK:g} points",
             "repetition", f"spaced_{prefixes}", spaced(prefixes, "adapted"),
             lambda r, p=prefixes: spaced(p, "base")(r) + SPACED_PUNCTUATION_SLACK, "<=")
      for prefixes in ("wikitext", "roc")),
    Target(f"cloze greedy infill hit rate >= {CLOZE_MIN:g}%", "cloze", "cloze", cloze("adapted_infill"),
           lambda r: CLOZE_MIN, ">=", cloze_interval),
    Target("cloze greedy infill above the better left-context guess (base or adapted)", "cloze", "cloze",
           cloze("adapted_infill"), lambda r: max(cloze("base_left_guess")(r), cloze("adapted_left_guess")(r)), ">",
           cloze_interval),
)

PASS, FAIL, SEEN, UNSURE = "PASS", "FAIL", "SEEN", "UNSURE"


def figure(getter: Getter, results: dict) -> float | None:
    try:
        return float(getter(results))
    except (KeyError, TypeError):
        return None


def interval_of(target: Target, results: dict) -> list[float] | None:
    """[low, high] of the target's figure, or None where its row measured none (an older run, or
    no finite interval)."""
    if target.interval is None:
        return None
    try:
        low, high = (float(x) for x in target.interval(results))
    except (KeyError, TypeError, ValueError):
        return None
    return [low, high] if math.isfinite(low) and math.isfinite(high) else None


def check_criteria(results: dict, seen: dict[str, str] | None = None) -> list[dict]:
    """[{"target", "row", "line", "value", "bound", "interval", "pass", "status"}] in TARGETS order.
    `seen`: row -> why it was seen in training; such a row's targets get status SEEN, no figures.
    "pass" is the point figure's; the status is UNSURE where the bound lies inside the interval."""
    seen = seen or {}
    checked = []
    for target in TARGETS:
        if target.row in seen:
            checked.append({"target": target.text, "row": target.row, "line": target.line, "value": None,
                            "bound": None, "interval": None, "pass": None, "status": SEEN})
            continue
        value, bound = figure(target.value, results), figure(target.bound, results)
        passed = value is not None and bound is not None and COMPARE[target.compare](value, bound)
        interval = interval_of(target, results)
        status = PASS if passed else FAIL
        verdicts = {COMPARE[target.compare](x, bound) for x in interval} if interval and bound is not None else set()
        if len(verdicts) > 1:  # one end of the interval passes, the other fails
            status = UNSURE
        checked.append({"target": target.text, "row": target.row, "line": target.line, "value": value,
                        "bound": bound, "interval": interval, "pass": passed, "status": status})
    return checked


def format_criteria(checked: list[dict]) -> list[str]:
    """'PASS  target (value 84.90, bound 82.00, 95% interval 83.10-86.50)' lines; 'SEEN  target
    (seen in training: not judged)'."""
    def number(x):
        return "missing" if x is None else f"{x:.4g}"

    def interval(c):
        return f", 95% interval {number(c['interval'][0])}-{number(c['interval'][1])}" if c.get("interval") else ""

    return [f"{SEEN}  {c['target']} (seen in training: not judged)" if c["status"] == SEEN else
            f"{c['status']}  {c['target']} (value {number(c['value'])}, bound {number(c['bound'])}{interval(c)})"
            for c in checked]
