"""CoNLL-2003 linear probes for a model comparison: POS accuracy, chunk and NER entity F1.

Both models get the same protocol, on fixed document splits (magnet/splits.py): heads
(dropout + linear, `train_head`) fit on the first N sentences of the train file's *train*
documents, each head's checkpoint chosen on the first M of its *select* documents, and scored
once on the scored split (report: valid). A train file with no split rule (your own) is cut
instead: its first N sentences fit, the next M choose. Word vectors come from the feature cache
(`conll_features`), so a rerun only retrains the heads, which takes seconds.
"""
from __future__ import annotations

from pathlib import Path

from magnet.tagging.conll import TASKS
from magnet.tagging.features import conll_features, fit_and_select_features
from magnet.tagging.head_training import HeadTrainConfig, score, train_head
from magnet.progress import progress


def probe_scores(engine, mode: str, train_path: Path, scored_path: Path, scored_split: str | None, n_train: int,
                 n_select: int, n_scored: int, steps: int, use_cache: bool = True) -> dict:
    """{task: {"score", "metric", "selection_score", "step"}, "sentences": {...}} for one model.
    `scored_split` None: all of `scored_path` (a file with no split rule)."""
    (train, train_x), (select, select_x) = fit_and_select_features(engine, mode, train_path, n_train, n_select,
                                                                   use_cache=use_cache)
    scored, scored_x = conll_features(engine, mode, scored_path, n_scored or None, use_cache=use_cache,
                                      split=scored_split)
    if not train or not select or not scored:
        raise SystemExit(f"the probes need sentences to fit on, choose on and score: {train_path} has {len(train)} "
                         f"train and {len(select)} select sentences, {scored_path} {len(scored)} to score")
    config = HeadTrainConfig(steps=steps, eval_every=min(HeadTrainConfig.eval_every, steps))
    result: dict = {"sentences": {"train": len(train), "selection": len(select), "valid": len(scored)}}
    for task in progress(TASKS, f"probes ({mode})", unit="task"):
        trained = train_head(task, train_x, [s.tags[task] for s in train], select_x, [s.tags[task] for s in select],
                             config)
        value, metric = score(task, [s.tags[task] for s in scored], [trained.head.predict(x) for x in scored_x])
        result[task] = {"score": value, "metric": metric, "selection_score": trained.score, "step": trained.step}
    return result
