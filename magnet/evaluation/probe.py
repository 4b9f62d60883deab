"""CoNLL-2003 linear probes for a model comparison: POS accuracy, chunk and NER entity F1.

Both models get the same protocol: heads (dropout + linear, `train_head`) fit on the first
N train sentences, each head's checkpoint chosen on the next M train sentences (the
selection split), and scored once on valid, the reported split. Word vectors come from the
feature cache (`conll_features`), so a rerun only retrains the heads, which takes seconds.
"""
from __future__ import annotations

from pathlib import Path

from magnet.tagging.conll import TASKS
from magnet.tagging.features import conll_features
from magnet.tagging.head_training import HeadTrainConfig, score, train_head


def selection_cut(total: int, n_train: int, n_select: int) -> int:
    """Index where the selection split starts in the first `total` train sentences: n_train
    when the file has enough, else the same train/selection proportion of what there is."""
    if total < 2:
        raise SystemExit(f"the CoNLL train file has {total} sentence(s): the probes need at least 2")
    if total >= n_train + n_select:
        return n_train
    n_select = max(1, round(total * n_select / (n_train + n_select)))
    return total - n_select


def probe_scores(engine, mode: str, train_path: Path, valid_path: Path, n_train: int, n_select: int,
                 n_valid: int, steps: int, use_cache: bool = True) -> dict:
    """{task: {"score", "metric", "selection_score", "step"}, "sentences": {...}} for one model."""
    train, train_x = conll_features(engine, mode, train_path, n_train + n_select, use_cache=use_cache)
    valid, valid_x = conll_features(engine, mode, valid_path, n_valid or None, use_cache=use_cache)
    cut = selection_cut(len(train), n_train, n_select)
    config = HeadTrainConfig(steps=steps, eval_every=min(HeadTrainConfig.eval_every, steps))
    result: dict = {"sentences": {"train": cut, "selection": len(train) - cut, "valid": len(valid)}}
    for task in TASKS:
        tags = [s.tags[task] for s in train]
        trained = train_head(task, train_x[:cut], tags[:cut], train_x[cut:], tags[cut:], config)
        value, metric = score(task, [s.tags[task] for s in valid], [trained.head.predict(x) for x in valid_x])
        result[task] = {"score": value, "metric": metric, "selection_score": trained.score, "step": trained.step}
    return result
