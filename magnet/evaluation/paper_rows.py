"""The measurements behind `magnet eval paper`: one function per benchmark, each scoring the
base model and the adapted one on the same subsample of one split, reusing the benchmark's
own module; and the data each row scores, for the seen-in-training check."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from magnet.datasets import read_stsb
from magnet.evaluation.cloze import cloze_scores, items_file, load_items
from magnet.evaluation.infill import infill_controls, roc_stories
from magnet.evaluation.intervals import perplexity_ratio_interval, score_difference_interval
from magnet.evaluation.overlap import first_overlap
from magnet.evaluation.probe import probe_scores
from magnet.tagging.conll import ENTITY_TASKS, TASKS
from magnet.tagging.heads import DEFAULT_FEATURE_MODE
from magnet.evaluation.repetition import compared_repetition, roc_prefixes, wikitext_prefixes
from magnet.evaluation.sizes import EvalSizes, spread
from magnet.evaluation.sts import stsb_spearman, stsb_spearman_interval
from magnet.evaluation.wikitext import wikitext_perplexity
from magnet.masks import AttentionMode
from magnet.splits import REPORT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaperRun:
    base: object  # Engine without the adapter
    adapted: object  # Engine with it (merged)
    files: dict[str, Path]  # data flag -> file
    splits: dict[str, str | None]  # data flag -> the split of it scored (None: the whole file)
    sizes: EvalSizes
    use_cache: bool = True
    split: str = REPORT  # the --split asked (the cloze items have a set per split, not a data file)

    def scored(self, flag: str) -> tuple[Path, str | None]:
        return self.files[flag], self.splits[flag]


def stsb_row(run: PaperRun) -> dict:
    """Last-token embeddings with the adapter's instruction; the base read both ways."""
    rows = spread(read_stsb(*run.scored("--stsb")), run.sizes.stsb_pairs)
    instruction = run.adapted.instruction
    adapted, interval = stsb_spearman_interval(run.adapted, rows, instruction, label="STS-B adapted")
    return {"pairs": len(rows), "adapted": adapted, "adapted_interval": list(interval),
            "base_causal": stsb_spearman(run.base, rows, instruction, AttentionMode.CAUSAL, label="STS-B base causal"),
            "base_bidirectional": stsb_spearman(run.base, rows, instruction, label="STS-B base bidirectional")}


def conll_row(run: PaperRun) -> dict:
    """Base: causal word vectors (its own way); adapted: bidirectional, a word read as the
    shipped tagging heads read it (DEFAULT_FEATURE_MODE: the output before it and its own).
    Each at the layer the same sweep chooses for it on select (magnet/tagging/layers.py)."""
    s = run.sizes
    shared = (run.files["--conll-train"], *run.scored("--conll-valid"), s.conll_train, s.conll_select,
              s.conll_valid, s.probe_steps, run.use_cache)
    base, adapted = probe_scores(run.base, "causal", *shared), probe_scores(run.adapted, DEFAULT_FEATURE_MODE, *shared)
    # x100 adapted - base, both taggers' counts of a sentence drawn together; the counts are not kept
    differences = {task: [100 * x for x in score_difference_interval(
        adapted[task].pop("sentence_counts"), base[task].pop("sentence_counts"), task in ENTITY_TASKS)]
        for task in TASKS}
    return {"base_causal": base, "adapted": adapted, "difference_intervals": differences}


def roc_row(run: PaperRun) -> dict:
    """Every reading of infill.READINGS by the adapted model, and the base left to right."""
    return infill_controls(run.adapted, run.base, roc_stories(*run.scored("--roc"), run.sizes.roc_stories))


def wikitext_row(run: PaperRun) -> dict:
    s = run.sizes
    base = wikitext_perplexity(run.base, *run.scored("--wikitext"), s.wikitext_windows, s.window_tokens,
                               "WikiText base")
    adapted = wikitext_perplexity(run.adapted, *run.scored("--wikitext"), s.wikitext_windows, s.window_tokens,
                                  "WikiText adapted")
    return {"tokens": base.tokens, "windows": base.windows, "window": base.window, "base": base.ppl,
            "adapted": adapted.ppl,  # adapted / base PPL, both readings of a window drawn together
            "ratio_interval": list(perplexity_ratio_interval(adapted.nlls, base.nlls, [base.window] * base.windows))}


def repetition_row(run: PaperRun) -> dict:
    s = run.sizes
    prefix_sets = {"wikitext": wikitext_prefixes(*run.scored("--wikitext"), s.wikitext_prefixes),
                   "roc": roc_prefixes(*run.scored("--roc"), s.roc_prefixes)}
    result: dict = {"max_tokens": s.continuation_tokens, "prefixes": {k: len(v) for k, v in prefix_sets.items()}}
    for name, prefixes in prefix_sets.items():
        result[name] = compared_repetition(run.base, run.adapted, prefixes, s.continuation_tokens, run.use_cache)
    return result


def cloze_row(run: PaperRun) -> dict:
    path = items_file(run.split)
    return {"items_file": path.name, **cloze_scores(run.base, run.adapted, spread(load_items(path), run.sizes.cloze_items),
                                                   run.sizes.fill_tokens, run.use_cache)}


@dataclass(frozen=True)
class Row:
    measure: Callable[[PaperRun], dict]
    data: Callable[[PaperRun], list[tuple[Path, str | None]]]  # what it scores: (file, split)


ROWS = {
    "stsb": Row(stsb_row, lambda run: [run.scored("--stsb")]),
    "conll": Row(conll_row, lambda run: [run.scored("--conll-valid")]),
    "roc": Row(roc_row, lambda run: [run.scored("--roc")]),
    "wikitext": Row(wikitext_row, lambda run: [run.scored("--wikitext")]),
    "repetition": Row(repetition_row, lambda run: [run.scored("--wikitext"), run.scored("--roc")]),
    "cloze": Row(cloze_row, lambda run: [(items_file(run.split), None)]),
}


def seen_rows(run: PaperRun, records: list) -> dict[str, str]:
    """row -> why its data was seen in training (the adapter's manifest records), for rows that were."""
    return {name: why for name, row in ROWS.items() if (why := first_overlap(records, row.data(run)))}


def measure_rows(run: PaperRun, seen: dict[str, str], done: dict[str, dict] | None = None,
                 finished: Callable[[dict], None] | None = None) -> dict[str, dict]:
    """{row: its numbers + "seconds" (wall) + "cpu_seconds" (this process's CPU time: what the row
    costs on a machine shared with other work)}, in table order. A row seen in training is not
    measured: {"seen_in_training": why}. Rows in `done` (a resumed run) are kept as they are;
    `finished(results so far)` is called after every row, so its caller can write them out."""
    results: dict[str, dict] = {}
    for number, (name, row) in enumerate(ROWS.items(), 1):
        where = f"paper: row {number}/{len(ROWS)} {name}"
        if done and name in done:
            results[name] = done[name]
            log.info("%s kept from the earlier run", where)
            continue
        if name in seen:
            results[name] = {"seen_in_training": seen[name]}
            log.info("%s seen in training, not measured: %s", where, seen[name])
        else:
            log.info("%s ...", where)
            started, cpu = time.perf_counter(), time.process_time()
            results[name] = {**row.measure(run), "seconds": round(time.perf_counter() - started, 1),
                             "cpu_seconds": round(time.process_time() - cpu, 1)}
            log.info("%s done in %.0fs (%.0fs CPU)", where, results[name]["seconds"], results[name]["cpu_seconds"])
        if finished is not None:
            finished(results)
    return results
