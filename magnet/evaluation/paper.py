"""`magnet eval paper`: the MAGNET paper's comparison for one base model and its adapter.

    magnet eval paper [--adapter DIR] [--split report|select|train] [--quick] [--output DIR] [--resume]

Loads the base model twice: once with the adapter merged, once without. Rows (each scored
on the same subsample of one split for both models; sizes in magnet/evaluation/sizes.py,
splits in magnet/splits.py):

    STS-B Spearman              base causal and bidirectional, adapted bidirectional
    CoNLL-2003 POS/chunk/NER    linear probes: base causal vs adapted bidirectional word vectors,
                                each at the layer select chooses
    ROC middle sentence PPL     the adapter's hybrid fill and its controls (left to right, no
                                suffix, another story's suffix), base left to right
    WikiText-2 PPL              left to right, both
    Rep-Sen / Rep-4             greedy generations from WikiText and ROC prefixes, both
    cloze hit rate              adapted infill vs left-context guesses

Results are on the *report* split unless --split says otherwise (select: the data training
choices are made on). A row whose data the adapter's manifest says it trained on is marked
"seen in training" and neither measured nor judged. Prints a markdown table with the paper's
Llama-2-7B figures and the project's targets (PASS/FAIL, or UNSURE where the bound lies inside
the figure's 95% interval: magnet/evaluation/criteria.py).
paper.json and paper.md are rewritten after every row, so an interrupted run keeps what it
measured and --resume measures only the rest; paper.png is drawn at the end. Without
--output they go to $MAGNET_CACHE_DIR/paper/<adapter>-<split>[-quick]/. Word features and
generations are cached in $MAGNET_CACHE_DIR, so a rerun mostly re-scores.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from magnet.evaluation.data_files import DATA_FLAGS, add_data_arguments, add_split_argument, data_files, file_split
from magnet.evaluation.sizes import FULL, QUICK
from magnet.model_options import add_model_arguments
from magnet.splits import REPORT

log = logging.getLogger(__name__)

SCORED_FLAGS = ("--stsb", "--conll-valid", "--roc", "--wikitext")  # --conll-train only fits and chooses probes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, *DATA_FLAGS)
    add_split_argument(parser)
    add_model_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="small subsamples of every row: a few minutes on CPU")
    parser.add_argument("--output", type=Path, default=None,
                        help="write paper.json, paper.md, paper.png here (default: $MAGNET_CACHE_DIR/paper/...)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows an earlier, interrupted run of the same model, split, sizes and data "
                             "wrote to the output directory; measure only the rest")
    parser.add_argument("--no-cache", action="store_true", help="recompute cached word features and generations")


def model_description(base, adapted) -> dict:
    from magnet.tagging.heads import adapter_identity

    identity = adapter_identity(adapted.loaded.adapter_path, adapted.loaded.adapter_sha256)
    return {"base": base.name, "base_path": str(base.loaded.base_path), "adapted": adapted.name,
            "adapter": asdict(identity) if identity else None,
            "device": str(adapted.device), "dtype": str(adapted.loaded.dtype).replace("torch.", "")}


def default_output(model: dict, split: str, quick: bool) -> Path:
    """$MAGNET_CACHE_DIR/paper/<adapter name>-<sha256[:12]>-<split>[-quick]: one place per model
    and run kind, so --resume finds an interrupted run without --output."""
    from magnet.embedded import cache_dir

    adapter = model["adapter"]
    name = f"{adapter['name']}-{adapter['sha256'][:12]}" if adapter else "base"
    return cache_dir() / "paper" / f"{name}-{split}{'-quick' if quick else ''}"


def resume_key(report: dict) -> dict:
    """What must match for an earlier run's rows to be kept."""
    return {k: report[k] for k in ("model", "split", "quick", "sizes", "data")}


def earlier_rows(report: dict, directory: Path) -> dict[str, dict]:
    """The rows of an earlier run in `directory` with the same resume_key ({} when none)."""
    path = directory / "paper.json"
    if not path.is_file():
        print(f"--resume: no earlier run in {directory}; measuring every row")
        return {}
    earlier = json.loads(path.read_text())
    if {k: earlier.get(k) for k in resume_key(report)} != resume_key(report):
        print(f"--resume: {path} is of another model, split, size or data; measuring every row")
        return {}
    return earlier.get("results", {})


def busy_note(loads: list[float], own_threads: int) -> str | None:
    """A note when other work kept the machine busy: a load average (less this process's own
    threads, once it runs) above the cores it may use; its timings are then not an idle machine's."""
    from magnet.threads import usable_cores

    cores = usable_cores()
    others = max([loads[0]] + [load - own_threads for load in loads[1:]]) if loads else 0.0
    if others <= cores:
        return None
    return (f"The machine was busy: load average {others:.1f} from other work on {cores} usable core(s); "
            "the seconds above are slower than an idle machine's.")


def run(args: argparse.Namespace) -> int:
    import torch

    from magnet.evaluation.criteria import check_criteria
    from magnet.evaluation.overlap import training_records
    from magnet.evaluation.paper_report import markdown, write_report, write_tables
    from magnet.evaluation.paper_rows import ROWS, PaperRun, measure_rows, seen_rows
    from magnet.model_options import load_base_engine, load_engine

    started = time.perf_counter()
    loads = [os.getloadavg()[0]]
    files = data_files(args, *DATA_FLAGS)  # a missing file fails before minutes of model loading
    splits = {flag: file_split(files[flag], args.split, flag) for flag in SCORED_FLAGS}
    sizes = QUICK if args.quick else FULL
    adapted = load_engine(args)
    base = load_base_engine(args, adapted)
    run = PaperRun(base, adapted, files, splits, sizes, not args.no_cache, args.split)
    seen = seen_rows(run, training_records(adapted))
    notes = []
    if adapted is base:
        notes.append("No adapter: both columns are the base model.")
    if args.split != REPORT:
        notes.append(f"Scored on the {args.split} split: figures for choices made while training, not results "
                     "(results are on --split report).")
    report = {"model": model_description(base, adapted), "split": args.split, "quick": args.quick,
              "sizes": asdict(sizes), "rows": list(ROWS),
              "data": {flag: {"file": str(path), "split": splits.get(flag)} for flag, path in files.items()},
              "results": {}, "criteria": [], "notes": notes}
    output = args.output or default_output(report["model"], args.split, args.quick)
    print(f"writing {output}/paper.json and paper.md after every row" + ("" if args.output else " (--output to choose)"),
          flush=True)
    done = earlier_rows(report, output) if args.resume else {}

    def finished(results: dict) -> None:
        loads.append(os.getloadavg()[0])
        report["results"] = results
        report["criteria"] = check_criteria(results, {name: row["seen_in_training"] for name, row in results.items()
                                                      if "seen_in_training" in row})
        write_tables(report, output)

    finished(measure_rows(run, seen, done, finished))
    note = busy_note(loads, torch.get_num_threads())
    if note:
        notes.append(note)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(markdown(report), end="")
    for path in write_report(report, output):
        print(f"wrote {path}")
    return 0
