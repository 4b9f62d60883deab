"""Frozen word vectors for whole data sets, computed once and cached.

The heads are linear probes on frozen features, so the expensive part (the
model forward over every sentence) runs once per (model, adapter, feature
mode, layer, data file, sentence count, version of the engine code); training all
heads for all steps, and later evaluation runs, read the cache file instead.
The outputs of several layers (a layer sweep, magnet/tagging/layers.py) come from
one forward.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from magnet.atomic import atomic_file
from magnet.embedded import cache_dir
from magnet.manifest import BaseIdentity
from magnet.progress import progress
from magnet.tagging.heads import FEATURE_MODES, AdapterIdentity, adapter_identity
from magnet.tagging.words import join_words

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelIdentity:
    """What decides the word vectors a model produces."""

    base: BaseIdentity
    adapter: AdapterIdentity | None


def engine_identity(engine) -> ModelIdentity:
    loaded = engine.loaded
    return ModelIdentity(loaded.base, adapter_identity(loaded.adapter_path, loaded.adapter_sha256))


def require_feature_mode(mode: str) -> None:
    if mode not in FEATURE_MODES:
        raise ValueError(f"feature mode {mode!r}: use one of {', '.join(FEATURE_MODES)}")


# layer (1-based) -> one (n_words, D) float32 tensor per sentence, in input order
LayerFeatures = dict[int, list[torch.Tensor]]


def featurize(engine, mode: str, sentences: list[list[str]], layers: list[int] | None = None,
              batch_size: int = 32) -> LayerFeatures:
    """Word vectors of pre-split sentences after each of `layers` (None: the last), from one
    forward per batch."""
    require_feature_mode(mode)
    layers = layers or [engine.n_layers]
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))  # batch similar lengths
    out: LayerFeatures = {layer: [None] * len(sentences) for layer in layers}
    with progress(desc=f"word vectors ({mode})", total=len(order), unit="sentence") as bar:
        for first in range(0, len(order), batch_size):
            batch = order[first:first + batch_size]
            texts, spans = zip(*(join_words(sentences[i]) for i in batch))
            per_layer = engine.word_vectors_at(engine.word_inputs(list(texts)), list(spans), mode, layers)
            for layer, vectors in zip(layers, per_layer):
                for i, v in zip(batch, vectors):
                    out[layer][i] = v.float().cpu()
            bar.update(len(batch))
    return out


def code_fingerprint() -> str:
    """Hash of the code that turns text into word vectors: editing it invalidates cached features."""
    import magnet.engine
    import magnet.forward
    import magnet.lean
    import magnet.masks
    import magnet.pooling

    modules = (magnet.engine, magnet.forward, magnet.lean, magnet.masks, magnet.pooling)
    return hashlib.sha256("".join(inspect.getsource(m) for m in modules).encode()).hexdigest()[:16]


def cache_key(identity: ModelIdentity, mode: str, layer: int, data: Path, n_sentences: int,
              split: str | None = None) -> str:
    stat = data.stat()
    fields = {
        "model": asdict(identity),
        "code": code_fingerprint(),
        "mode": mode,
        "layer": layer,
        "data": str(data.resolve()),
        "data_size": stat.st_size,
        "data_mtime_ns": stat.st_mtime_ns,
        "sentences": n_sentences,  # the first n of the file (of its `split` documents)
        **({"split": split} if split else {}),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def features_path(identity: ModelIdentity, mode: str, layer: int, data: Path, n_sentences: int,
                  root: Path | None = None, split: str | None = None) -> Path:
    key = cache_key(identity, mode, layer, data, n_sentences, split)
    return (root or cache_dir() / "features") / f"{identity.base.name}-{mode}-layer{layer}-{key}.safetensors"


def save_features(path: Path, features: list[torch.Tensor]) -> None:
    """One (total_words, H) float16 matrix + per-sentence lengths; written atomically."""
    from safetensors.torch import save_file

    lengths = torch.tensor([len(f) for f in features], dtype=torch.int64)
    with atomic_file(path) as tmp:
        save_file({"words": torch.cat(features).half().contiguous(), "lengths": lengths}, tmp)


def load_features(path: Path) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(path)
    return list(tensors["words"].float().split(tensors["lengths"].tolist()))


def cached_features(engine, mode: str, data: Path, sentences: list[list[str]], layers: list[int] | None = None,
                    batch_size: int = 32, root: Path | None = None, use_cache: bool = True,
                    split: str | None = None) -> LayerFeatures:
    """Word vectors of `sentences` (the first ones of file `data`, of its `split` documents)
    after each of `layers` (None: the last), from the cache where present: one file per layer,
    the missing layers computed in one pass."""
    layers = layers or [engine.n_layers]
    identity = engine_identity(engine)
    paths = {layer: features_path(identity, mode, layer, Path(data), len(sentences), root, split) for layer in layers}
    found = {layer: load_features(path) for layer, path in paths.items() if use_cache and path.is_file()}
    if found:
        log.info("features: cache hit for layers %s of %s", sorted(found), data)
    missing = [layer for layer in layers if layer not in found]
    if not missing:
        return {layer: found[layer] for layer in layers}
    started = time.monotonic()
    computed = featurize(engine, mode, sentences, missing, batch_size)
    log.info("features: %d sentences of %s, layers %s, in %.1fs", len(sentences), data, missing,
             time.monotonic() - started)
    if use_cache:
        for layer, features in computed.items():
            save_features(paths[layer], features)
            computed[layer] = [f.half().float() for f in features]  # as a later cache hit will read them
    return {layer: found[layer] if layer in found else computed[layer] for layer in layers}


def conll_features(engine, mode: str, data: Path, max_sentences: int | None, batch_size: int = 32,
                   use_cache: bool = True, root: Path | None = None, split: str | None = None,
                   layers: list[int] | None = None):
    """-> (sentences of a CoNLL file, of its `split` documents (magnet.splits; None: all), and
    their word vectors after each of `layers` (None: the last)), featurized at most once."""
    from magnet.tagging.conll import read_conll

    sentences = read_conll(data, max_sentences, split)
    features = cached_features(engine, mode, Path(data), [s.words for s in sentences], layers, batch_size, root,
                               use_cache, split)
    return sentences, features


def selection_cut(total: int, n_train: int, n_select: int) -> int:
    """Where the choosing sentences start in the first `total` sentences of a file with no split
    rule: n_train when it has enough, else the same fit/choose proportion of what there is
    (n_train 0: all but the last n_select, or all but the last 15% when n_select is 0 too)."""
    if total < 2:
        raise SystemExit(f"the CoNLL train file has {total} sentence(s): fitting and choosing need at least 2")
    if n_train == 0:
        return max(1, total - (n_select or max(1, round(total * 0.15))))
    if total >= n_train + n_select:
        return n_train
    n_select = max(1, round(total * n_select / (n_train + n_select)))
    return total - n_select


def fit_and_select_features(engine, mode: str, data: Path, n_train: int, n_select: int, batch_size: int = 32,
                            use_cache: bool = True, layers: list[int] | None = None):
    """-> ((fit sentences, LayerFeatures), (select sentences, LayerFeatures)) of one CoNLL train
    file, the vectors after each of `layers` (None: the last).

    Heads fit on the first n_train sentences of its *train* documents and choose their
    checkpoint on the first n_select of its *select* documents (magnet/splits.py; 0: all). A
    file with no split rule (your own) is cut instead: its first n_train fit, the next n_select
    choose. A file that is all *report* (CoNLL valid) is refused: nothing may be chosen on it."""
    from magnet.splits import REPORT, SELECT, TRAIN, USER_TEXT, rule_for

    rule = rule_for(data)
    if rule is USER_TEXT:
        first, first_x = conll_features(engine, mode, data, (n_train and n_train + n_select) or None, batch_size,
                                        use_cache, layers=layers)
        cut = selection_cut(len(first), n_train, n_select)
        return ((first[:cut], {layer: x[:cut] for layer, x in first_x.items()}),
                (first[cut:], {layer: x[cut:] for layer, x in first_x.items()}))
    if TRAIN not in rule.splits or SELECT not in rule.splits:
        raise SystemExit(f"{data} is the {'/'.join(rule.splits)} split (magnet/splits.py): fit and choose on "
                         f"conll2003/train.txt, and score {REPORT} files with `magnet eval tagging`")
    fit = conll_features(engine, mode, data, n_train or None, batch_size, use_cache, split=TRAIN, layers=layers)
    select = conll_features(engine, mode, data, n_select or None, batch_size, use_cache, split=SELECT, layers=layers)
    return fit, select
