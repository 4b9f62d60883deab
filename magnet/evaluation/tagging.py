"""`magnet eval tagging`: score the loaded model's tagging heads on a CoNLL file.

    magnet eval tagging                                                 # default model + heads, CoNLL valid
    magnet eval tagging --adapter none --causal --heads DIR             # the paper's base row
    magnet eval tagging --split select                                  # the select documents of train.txt

POS: token accuracy. NER and chunk: entity-level F1 (exact span and type,
micro-averaged, as seqeval) and token accuracy.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from magnet.tagging.conll import ENTITY_TASKS
from magnet.tagging.features import conll_features
from magnet.tagging.heads import DEFAULT_HEADS_DIR, HeadsMismatchError, load_heads
from magnet.tagging.metrics import entity_scores, token_accuracy
from magnet.evaluation.data_files import add_data_arguments, add_split_argument
from magnet import model_options
from magnet.model_options import add_model_arguments
from magnet.tagging.options import add_feature_arguments, feature_mode

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heads", type=Path, default=DEFAULT_HEADS_DIR,
                        help="tagging heads dir (default: the shipped heads)")
    parser.add_argument("--max-sentences", type=int, default=0, help="first N sentences only (0 = all)")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    add_model_arguments(parser)
    add_feature_arguments(parser)
    add_data_arguments(parser, "--conll-valid", dest={"--conll-valid": "--data"})
    add_split_argument(parser)


def score_tasks(tagger, sentences, features) -> dict[str, dict[str, float]]:
    """task -> {"accuracy": ..., "f1": ... (entity tasks)} of the tagger's predictions."""
    scores = {}
    for task in tagger.tasks:
        gold = [s.tags[task] for s in sentences]
        pred = tagger.predict(features, task)
        scores[task] = {"accuracy": token_accuracy(gold, pred)}
        if task in ENTITY_TASKS:
            entities = entity_scores(gold, pred)
            scores[task].update(f1=entities.f1, precision=entities.precision, recall=entities.recall)
    return scores


def format_row(name: str, mode: str, n: int, scores: dict) -> str:
    cells = [f"{name} [{mode}] on {n} sentences:"]
    for task in ("pos", "chunk", "ner"):
        if task in scores:
            s = scores[task]
            f1 = f" F1 {100 * s['f1']:.2f}" if "f1" in s else ""
            cells.append(f"{task}{f1} acc {100 * s['accuracy']:.2f}")
    return "  ".join(cells)


def heads_note(training: dict, path: Path) -> str | None:
    """A note when the heads themselves read the scored file: fit on it, or their checkpoint
    chosen on it (the heads manifest's `training` train/valid file names)."""
    if training.get("train") == path.name:
        return f"note: these heads were fit on {path.name}: the figure is on their own training data"
    if training.get("valid") == path.name:
        return (f"note: these heads' checkpoints were chosen on {path.name}: the figure is slightly optimistic "
                "(magnet eval paper's probes choose on select documents)")
    return None


def check_mode(args: argparse.Namespace, heads_mode: str) -> None:
    if feature_mode(args, default=heads_mode) != heads_mode:
        hint = "add --causal" if heads_mode == "causal" else f"drop --causal (or pass --features {heads_mode})"
        raise SystemExit(f"the heads in {args.heads} read {heads_mode} word vectors: {hint}, or pass other --heads")


def run(args: argparse.Namespace) -> int:
    from magnet.tagging.tagger import Tagger

    from magnet.evaluation.data_files import file_split, find_data_file, flag_value, split_note
    from magnet.evaluation.overlap import seen_note

    started = time.monotonic()
    path = find_data_file(flag_value(args, "--conll-valid"), "--data")
    split = file_split(path, args.split, "--conll-valid", "--data")
    hint = "train heads for this model with `magnet train-tagger`, or pass --heads DIR"
    try:
        load_heads(args.heads)  # a folder without heads is named before the model loads
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}\n{hint}") from None
    engine = model_options.load_engine(args)  # looked up at call time, as tests replace it
    try:
        tagger = Tagger.load(engine, args.heads)
    except (FileNotFoundError, HeadsMismatchError) as exc:  # say what to change, no traceback
        raise SystemExit(f"{exc}\n{hint}") from None
    mode = tagger.manifest.feature_mode
    check_mode(args, mode)
    layer = tagger.manifest.feature_layer or engine.n_layers
    sentences, features = conll_features(engine, mode, path, args.max_sentences or None,
                                         args.feature_batch, not args.no_cache, split=split, layers=[layer])
    features = features[layer]
    scores = score_tasks(tagger, sentences, features)
    elapsed = time.monotonic() - started
    note = seen_note(engine, [(path, split)])
    chosen = heads_note(tagger.manifest.training, path)
    if args.json:
        print(json.dumps({"model": engine.name, "mode": mode, "data": str(path), "split": split,
                          "sentences": len(sentences), "seconds": round(elapsed, 1), "scores": scores,
                          "seen_in_training": note, "heads_note": chosen}))
    else:
        print(format_row(engine.name, mode, len(sentences), scores) + f"  ({split_note(path, split)}, {elapsed:.0f}s)")
        for line in (note, chosen):
            if line:
                print(line)
    return 0
