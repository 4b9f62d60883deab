"""CoNLL-2003 linear probes for a model comparison: POS accuracy, chunk and NER entity F1.

Both models get the same protocol, on fixed document splits (magnet/splits.py): heads
(dropout + linear, `train_head`) fit on the first N sentences of the train file's *train*
documents, at the layer a sweep chooses on the first M of its *select* documents
(magnet/tagging/layers.py: the same layers and rule for both sides), each head's checkpoint
chosen on the same select sentences, and scored once on the scored split (report: valid). A
train file with no split rule (your own) is cut instead: its first N sentences fit, the next M
choose. Word vectors come from the feature cache (`conll_features`), so a rerun only retrains
the heads.
"""
from __future__ import annotations

from pathlib import Path

from magnet.tagging.conll import ENTITY_TASKS, TASKS
from magnet.tagging.features import conll_features, fit_and_select_features
from magnet.tagging.head_training import HeadTrainConfig, score, train_head
from magnet.tagging.metrics import sentence_counts
from magnet.tagging.layers import choose_layer, sweep_layers
from magnet.progress import progress


def probe_scores(engine, mode: str, train_path: Path, scored_path: Path, scored_split: str | None, n_train: int,
                 n_select: int, n_scored: int, steps: int, use_cache: bool = True) -> dict:
    """{task: {"score", "metric", "selection_score", "step", "sentence_counts"}, "layer", "sweep",
    "sentences": {...}} for one model (sentence_counts: per scored sentence, for an interval).
    `scored_split` None: all of `scored_path` (a file with no split rule)."""
    layers = sweep_layers(engine.n_layers)
    (train, train_x), (select, select_x) = fit_and_select_features(engine, mode, train_path, n_train, n_select,
                                                                   use_cache=use_cache, layers=layers)
    if not train or not select:
        raise SystemExit(f"the probes need sentences to fit on and choose on: {train_path} has {len(train)} "
                         f"train and {len(select)} select sentences")
    config = HeadTrainConfig(steps=steps, eval_every=min(HeadTrainConfig.eval_every, steps))
    choice = choose_layer(list(TASKS), train, train_x, select, select_x, config)
    scored, scored_x = conll_features(engine, mode, scored_path, n_scored or None, use_cache=use_cache,
                                      split=scored_split, layers=[choice.layer])
    if not scored:
        raise SystemExit(f"the probes need sentences to score: {scored_path} has none")
    train_x, select_x, scored_x = train_x[choice.layer], select_x[choice.layer], scored_x[choice.layer]
    result: dict = {"sentences": {"train": len(train), "selection": len(select), "valid": len(scored)},
                    "layer": choice.layer, "layers": engine.n_layers,
                    "sweep": {str(layer): round(choice.mean(layer), 4) for layer in choice.scores}}
    for task in progress(TASKS, f"probes ({mode}, layer {choice.layer})", unit="task"):
        trained = train_head(task, train_x, [s.tags[task] for s in train], select_x, [s.tags[task] for s in select],
                             config)
        gold, pred = [s.tags[task] for s in scored], [trained.head.predict(x) for x in scored_x]
        value, metric = score(task, gold, pred)
        result[task] = {"score": value, "metric": metric, "selection_score": trained.score, "step": trained.step,
                        "sentence_counts": sentence_counts(task in ENTITY_TASKS, gold, pred)}
    return result
