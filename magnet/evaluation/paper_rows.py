"""The measurements behind `magnet eval paper`: one function per benchmark, each scoring the
base model and the adapted one on the same subsample, reusing the benchmark's own module."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from magnet.datasets import read_stsb
from magnet.evaluation.cloze import cloze_scores, load_items
from magnet.evaluation.infill import heldout_stories, infill_perplexity
from magnet.evaluation.probe import probe_scores
from magnet.evaluation.repetition import generation_repetition, roc_prefixes, wikitext_prefixes
from magnet.evaluation.sizes import EvalSizes, spread
from magnet.evaluation.sts import stsb_spearman
from magnet.evaluation.wikitext import wikitext_perplexity
from magnet.masks import AttentionMode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaperRun:
    base: object  # Engine without the adapter
    adapted: object  # Engine with it (merged)
    files: dict[str, Path]  # data flag -> file
    sizes: EvalSizes
    use_cache: bool = True


def stsb_row(run: PaperRun) -> dict:
    """Last-token embeddings with the adapter's instruction; the base read both ways."""
    rows = spread(read_stsb(run.files["--stsb"]), run.sizes.stsb_pairs)
    instruction = run.adapted.instruction
    return {"pairs": len(rows),
            "adapted": stsb_spearman(run.adapted, rows, instruction),
            "base_causal": stsb_spearman(run.base, rows, instruction, AttentionMode.CAUSAL),
            "base_bidirectional": stsb_spearman(run.base, rows, instruction)}


def conll_row(run: PaperRun) -> dict:
    """Base: causal word vectors (its own way); adapted: bidirectional with the token shift."""
    s = run.sizes
    shared = (run.files["--conll-train"], run.files["--conll-valid"], s.conll_train, s.conll_select,
              s.conll_valid, s.probe_steps, run.use_cache)
    return {"base_causal": probe_scores(run.base, "causal", *shared),
            "adapted": probe_scores(run.adapted, "bidirectional", *shared)}


def roc_row(run: PaperRun) -> dict:
    stories = heldout_stories(run.files["--roc"], run.sizes.roc_stories)

    def ppl(engine, hybrid: bool) -> float:
        return infill_perplexity(engine.model, engine.tokenizer, engine.anchor_id, stories, hybrid=hybrid)

    return {"stories": len(stories), "adapted_hybrid": ppl(run.adapted, True),
            "adapted_causal": ppl(run.adapted, False), "base_causal": ppl(run.base, False)}


def wikitext_row(run: PaperRun) -> dict:
    s, path = run.sizes, run.files["--wikitext"]
    base = wikitext_perplexity(run.base, path, s.wikitext_windows, s.window_tokens)
    adapted = wikitext_perplexity(run.adapted, path, s.wikitext_windows, s.window_tokens)
    return {"tokens": base.tokens, "windows": base.windows, "window": base.window, "base": base.ppl,
            "adapted": adapted.ppl}


def repetition_row(run: PaperRun) -> dict:
    s = run.sizes
    prefix_sets = {"wikitext": wikitext_prefixes(run.files["--wikitext"], s.wikitext_prefixes),
                   "roc": roc_prefixes(run.files["--roc"], s.roc_prefixes)}
    result: dict = {"max_tokens": s.continuation_tokens, "prefixes": {k: len(v) for k, v in prefix_sets.items()}}
    for name, prefixes in prefix_sets.items():
        result[name] = {who: generation_repetition(engine, prefixes, s.continuation_tokens, run.use_cache)
                        for who, engine in (("base", run.base), ("adapted", run.adapted))}
    return result


def cloze_row(run: PaperRun) -> dict:
    return cloze_scores(run.base, run.adapted, load_items(), run.sizes.fill_tokens, run.use_cache)


ROWS = {"stsb": stsb_row, "conll": conll_row, "roc": roc_row, "wikitext": wikitext_row,
        "repetition": repetition_row, "cloze": cloze_row}


def measure_rows(run: PaperRun) -> dict[str, dict]:
    """{row: its numbers + "seconds" (wall) + "cpu_seconds" (this process's CPU time: what the row
    costs on a machine shared with other work)}, in table order."""
    results = {}
    for name, measure in ROWS.items():
        started, cpu = time.perf_counter(), time.process_time()
        results[name] = {**measure(run), "seconds": round(time.perf_counter() - started, 1),
                         "cpu_seconds": round(time.process_time() - cpu, 1)}
        log.info("paper: %s done in %.0fs (%.0fs CPU)", name, results[name]["seconds"], results[name]["cpu_seconds"])
    return results
