"""The built-in quality check: adapted model vs its base, side by side, on *select* data only
(magnet.splits: the data every training choice reads; never the reported split).

    STS-B Spearman on the select pairs of `select_stsb` (cosine of last-token embeddings)
    ROC Stories PPL of the removed middle sentence on select stories: the adapted hybrid
    fill, the adapted model left to right, and the base left to right

Both score `eval_pairs` / `eval_stories` items spread over the select split, as `magnet eval`
subsamples (the first N are one stretch of the file: the first 150 select stories read the
default adapter's fill at 0.90x its left-to-right PPL, all 381 at 0.94x).
"""
from __future__ import annotations

from magnet.datasets import is_roc_file, read_roc_stories, read_stsb
from magnet.engine import Engine, EngineConfig
from magnet.evaluation.infill import infill_perplexity
from magnet.evaluation.sizes import spread
from magnet.masks import context_mode
from magnet.splits import SELECT
from magnet.evaluation.sts import stsb_spearman
from magnet.loading import LoadedModel

_BASE_CACHE: dict = {}


def quality_report(config, loaded: LoadedModel, model) -> dict:
    was_training = model.training
    model.eval()
    try:
        adapted = Engine(LoadedModel(model, loaded.tokenizer, loaded.base_path, loaded.base, None, None),
                         EngineConfig(max_length=config.sscl_max_length))
        report = scores(config, adapted, hybrid=True, prefix="adapted")
        report.update({k: v for k, v in scores(config, adapted, hybrid=False, prefix="adapted").items()
                       if "roc" in k})
        with model.disable_adapter():
            key = (str(loaded.base_path), config.select_stsb, config.eval_pairs, config.eval_stories)
            if key not in _BASE_CACHE:
                _BASE_CACHE[key] = scores(config, adapted, hybrid=False, prefix="base")
        report.update(_BASE_CACHE[key])
    finally:
        model.train(was_training)
    return report


def scores(config, engine: Engine, hybrid: bool, prefix: str) -> dict:
    report = {}
    if config.select_stsb and hybrid:
        rows = spread(read_stsb(config.select_stsb, SELECT), config.eval_pairs)
        report[f"{prefix}_stsb_spearman"] = round(stsb_spearman(engine, rows, config.instruction), 2)
    roc = [p for p in config.data if is_roc_file(p)]
    if roc and config.eval_stories:
        stories = spread(read_roc_stories(roc[0], SELECT), config.eval_stories)
        ppl = infill_perplexity(engine.model, engine.tokenizer, engine.anchor_id, stories, hybrid=hybrid,
                                context=context_mode(config.context))
        report[f"{prefix}_roc_ppl_{'hybrid' if hybrid else 'causal'}"] = round(ppl, 2)
    return report
