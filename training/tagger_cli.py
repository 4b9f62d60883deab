"""`magnet train-tagger`: fit NER / POS / chunk heads on frozen word vectors.

    magnet train-tagger --train ../shared/data/conll2003/train.txt --out heads/
    magnet train-tagger ... --adapter none --causal --out heads-base-causal/   # the paper's base row
    magnet train-tagger ... --layer 30                                         # a layer of your choosing

Heads fit on the train file's *train* documents, at the layer a sweep chooses on its *select*
documents (magnet/tagging/layers.py; `--layer N` skips the sweep), and keep the step that
scores best on them (magnet/splits.py); CoNLL valid is the report split, scored only by
`magnet eval tagging`. A file of your own (no split rule) is cut: its last sentences choose.

Features are computed once per (model, adapter, mode, layer, file, sentence count)
and cached in $MAGNET_CACHE_DIR/features; every head and step reuses them.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict
from pathlib import Path

from magnet.tagging.conll import TASKS
from magnet.tagging.features import engine_identity, fit_and_select_features
from magnet.tagging.heads import HeadsManifest, save_heads
from magnet import model_options
from magnet.model_options import add_model_arguments
from magnet.tagging.options import add_feature_arguments, feature_mode
from magnet.tagging.head_training import HeadTrainConfig, train_head
from magnet.tagging.layers import choose_layer, sweep_layers

log = logging.getLogger(__name__)

DEFAULT_MAX_SENTENCES = 2000  # of train: ~8 min on 1 busy CPU core; all 12k would take ~1 h
DEFAULT_MAX_SELECT_SENTENCES = 1000  # of select (~2.1k in CoNLL train)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, type=Path,
                        help="CoNLL-2003 train file (word POS chunk NER): heads fit on its train documents and "
                             "choose their checkpoint on its select documents")
    parser.add_argument("--out", required=True, type=Path, help="directory for heads.safetensors, labels, magnet.json")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of pos,chunk,ner (default all)")
    parser.add_argument("--max-sentences", type=int, default=DEFAULT_MAX_SENTENCES,
                        help=f"use the first N train sentences (default {DEFAULT_MAX_SENTENCES}; 0 = all 14k)")
    parser.add_argument("--max-select-sentences", type=int, default=DEFAULT_MAX_SELECT_SENTENCES,
                        help=f"choose on the first N select sentences (default {DEFAULT_MAX_SELECT_SENTENCES}; 0 = all)")
    parser.add_argument("--layer", default="auto",
                        help="which layer's outputs the heads read: auto (default: the sweep of "
                             "magnet/tagging/layers.py, chosen on select) or N (1-based; the last = the model's output)")
    defaults = HeadTrainConfig()
    group = parser.add_argument_group("head training (paper defaults)")
    group.add_argument("--steps", type=int, default=defaults.steps)
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="sentences per step")
    group.add_argument("--lr", type=float, default=defaults.lr)
    group.add_argument("--dropout", type=float, default=defaults.dropout)
    group.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    group.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between select scores")
    group.add_argument("--seed", type=int, default=defaults.seed)
    add_model_arguments(parser)
    add_feature_arguments(parser)


def parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise SystemExit(f"--tasks {text!r}: choose from {', '.join(TASKS)}")
    return tasks


def train_config(args: argparse.Namespace) -> HeadTrainConfig:
    return HeadTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, dropout=args.dropout,
                           weight_decay=args.weight_decay, eval_every=args.eval_every, seed=args.seed)


def parse_layer(text: str, engine) -> int | None:
    """--layer: None for auto (the sweep), else a layer of this model."""
    if text == "auto":
        return None
    if not text.isdigit() or not engine.has_layer(int(text)):
        raise SystemExit(f"--layer {text!r}: give auto or a layer from 1 to {engine.n_layers} (this model's)")
    return int(text)


def run(args: argparse.Namespace) -> int:
    tasks, config, mode = parse_tasks(args.tasks), train_config(args), feature_mode(args)
    if not args.train.is_file():
        raise SystemExit(f"{args.train}: no such file (expected CoNLL-2003: word POS chunk NER per line)")
    engine = model_options.load_engine(args)  # looked up at call time, as tests replace it
    fixed = parse_layer(args.layer, engine)
    started = time.monotonic()
    (train, train_x), (select, select_x) = fit_and_select_features(
        engine, mode, args.train, args.max_sentences, args.max_select_sentences, args.feature_batch, not args.no_cache,
        layers=[fixed] if fixed else sweep_layers(engine.n_layers))
    featurized = time.monotonic() - started
    choice = None if fixed else choose_layer(tasks, train, train_x, select, select_x, config)
    layer = fixed or choice.layer
    heads, metrics = {}, {}
    for task in tasks:
        trained = train_head(task, train_x[layer], [s.tags[task] for s in train],
                             select_x[layer], [s.tags[task] for s in select], config)
        heads[task] = trained.head
        metrics[task] = {trained.metric: round(trained.score, 4), "step": trained.step}
        log.info("%s: kept step %d, select %s %.4f", task, trained.step, trained.metric, trained.score)
    identity = engine_identity(engine)
    training = {**asdict(config), "train": args.train.name, "train_sentences": len(train),
                "select": f"{args.train.name} (select)", "select_sentences": len(select)}
    if choice:
        training["layer_sweep"] = {str(k): round(choice.mean(k), 4) for k in choice.scores}  # mean select score
    manifest = HeadsManifest(identity.base, identity.adapter, mode, tasks, training, metrics, feature_layer=layer)
    save_heads(args.out, heads, manifest)
    how = f"layer {layer} of {engine.n_layers}" + (", chosen on select" if choice else "")
    print(f"heads for {', '.join(tasks)} ({mode}, {how}, {engine.name}) saved to {args.out}: "
          f"features {featurized:.0f}s, total {time.monotonic() - started:.0f}s")
    if choice:
        print("  layer sweep, mean select score of short-trained heads: "
              + ", ".join(f"{k}: {choice.mean(k):.4f}" for k in sorted(choice.scores)))
    for task, m in metrics.items():
        print(f"  {task}: select {next(iter(m))} {next(iter(m.values())):.4f} at step {m['step']}")
    return 0
