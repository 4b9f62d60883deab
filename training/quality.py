"""The built-in quality check: adapted model vs its base, side by side.

    STS-B dev Spearman (cosine of last-token embeddings, with the instruction)
    ROC Stories infill PPL of the removed middle sentence: hybrid (adapted)
    vs left-to-right (base), on stories held out from training
"""
from __future__ import annotations

from magnet.datasets import is_roc_file, read_stsb
from magnet.engine import Engine, EngineConfig
from magnet.evaluation.infill import heldout_stories, infill_perplexity
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
        with model.disable_adapter():
            key = (str(loaded.base_path), config.stsb_dev, config.eval_pairs, config.eval_stories)
            if key not in _BASE_CACHE:
                _BASE_CACHE[key] = scores(config, adapted, hybrid=False, prefix="base")
        report.update(_BASE_CACHE[key])
    finally:
        model.train(was_training)
    return report


def scores(config, engine: Engine, hybrid: bool, prefix: str) -> dict:
    report = {}
    if config.stsb_dev:
        rows = read_stsb(config.stsb_dev)[: config.eval_pairs or None]
        report[f"{prefix}_stsb_spearman"] = round(stsb_spearman(engine, rows, config.instruction), 2)
    roc = [p for p in config.data if is_roc_file(p)]
    if roc and config.eval_stories:
        stories = heldout_stories(roc[0], min(config.eval_stories, config.holdout_stories))
        ppl = infill_perplexity(engine.model, engine.tokenizer, engine.anchor_id, stories, hybrid=hybrid)
        report[f"{prefix}_roc_ppl_{'hybrid' if hybrid else 'causal'}"] = round(ppl, 2)
    return report
