"""The project's targets for an adapted model, checked on the numbers of `magnet eval paper`.

Each target compares one adapted figure with a bound (a fixed number, or a multiple of the
base model's figure on the same data); a missing figure fails its target.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

ROC_INFILL_RATIO = 0.8  # hybrid infill PPL at most this times the base's left-to-right PPL
STSB_MIN = 80.0  # STS-B dev Spearman x100
WIKITEXT_PPL_RATIO = 1.15  # left-to-right PPL at most this times the base's
REP4_RATIO = 1.2  # Rep-4 at most this times the base's
SPACED_PUNCTUATION_SLACK = 1.0  # percentage points of " ." / " ," above the base's own rate

Getter = Callable[[dict], float]


@dataclass(frozen=True)
class Target:
    text: str
    value: Getter  # the adapted model's figure
    bound: Getter  # what it is compared with
    compare: str  # "<=", ">=" or ">"


COMPARE = {"<=": operator.le, ">=": operator.ge, ">": operator.gt}


def probe(task: str, who: str) -> Getter:
    return lambda r: 100 * r["conll"][who][task]["score"]  # x100, as in the table


def repetition(prefixes: str, who: str) -> Getter:
    return lambda r: r["repetition"][prefixes][who]["rep_4"]


def spaced(prefixes: str, who: str) -> Getter:
    return lambda r: 100 * r["repetition"][prefixes][who]["spaced_punctuation"]


TARGETS = (
    Target(f"ROC hybrid infill PPL <= {ROC_INFILL_RATIO} x base left-to-right PPL",
           lambda r: r["roc"]["adapted_hybrid"], lambda r: ROC_INFILL_RATIO * r["roc"]["base_causal"], "<="),
    Target("POS accuracy above the base causal probe", probe("pos", "adapted"), probe("pos", "base_causal"), ">"),
    Target("chunk F1 above the base causal probe", probe("chunk", "adapted"), probe("chunk", "base_causal"), ">"),
    Target("NER F1 above the base causal probe", probe("ner", "adapted"), probe("ner", "base_causal"), ">"),
    Target(f"STS-B dev Spearman >= {STSB_MIN:g}", lambda r: r["stsb"]["adapted"], lambda r: STSB_MIN, ">="),
    Target(f"WikiText-2 PPL <= {WIKITEXT_PPL_RATIO} x base",
           lambda r: r["wikitext"]["adapted"], lambda r: WIKITEXT_PPL_RATIO * r["wikitext"]["base"], "<="),
    Target(f"Rep-4 (WikiText prefixes) <= {REP4_RATIO} x base",
           repetition("wikitext", "adapted"), lambda r: REP4_RATIO * repetition("wikitext", "base")(r), "<="),
    Target(f"Rep-4 (ROC prefixes) <= {REP4_RATIO} x base",
           repetition("roc", "adapted"), lambda r: REP4_RATIO * repetition("roc", "base")(r), "<="),
    *(Target(f"punctuation after a space ({prefixes} generations) <= base + {SPACED_PUNCTUATION_SLACK:g} points",
             spaced(prefixes, "adapted"), lambda r, p=prefixes: spaced(p, "base")(r) + SPACED_PUNCTUATION_SLACK, "<=")
      for prefixes in ("wikitext", "roc")),
    Target("cloze infill hit rate above the base's left-context guess",
           lambda r: 100 * r["cloze"]["adapted_infill"], lambda r: 100 * r["cloze"]["base_left_guess"], ">"),
)


def figure(getter: Getter, results: dict) -> float | None:
    try:
        return float(getter(results))
    except (KeyError, TypeError):
        return None


def check_criteria(results: dict) -> list[dict]:
    """[{"target", "value", "bound", "pass"}] in TARGETS order."""
    checked = []
    for target in TARGETS:
        value, bound = figure(target.value, results), figure(target.bound, results)
        passed = value is not None and bound is not None and COMPARE[target.compare](value, bound)
        checked.append({"target": target.text, "value": value, "bound": bound, "pass": passed})
    return checked


def format_criteria(checked: list[dict]) -> list[str]:
    """'PASS  target (value 82.10, bound 80.00)' lines."""
    def number(x):
        return "missing" if x is None else f"{x:.4g}"

    return [f"{'PASS' if c['pass'] else 'FAIL'}  {c['target']} (value {number(c['value'])}, bound {number(c['bound'])})"
            for c in checked]
