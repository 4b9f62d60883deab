"""Head training on synthetic features, save/load, manifest checks (no model)."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from magnet.manifest import BaseIdentity
from magnet.tagging.heads import AdapterIdentity, HeadsManifest, TagHead, load_heads, save_heads
from magnet.tagging.head_training import HeadTrainConfig, train_head

BASE = BaseIdentity("tiny", "llama", 16, 2, 300)


def separable_data(n_sentences: int, seed: int):
    """Sentences of random vectors whose tag is decided by the sign of two coordinates."""
    g = torch.Generator().manual_seed(seed)
    names = {(False, False): "O", (True, False): "B-PER", (False, True): "B-LOC", (True, True): "I-PER"}
    features, tags = [], []
    for _ in range(n_sentences):
        x = torch.randn(int(torch.randint(2, 9, (1,), generator=g)), 16, generator=g)
        features.append(x)
        tags.append([names[(bool(a > 0), bool(b > 0))] for a, b in x[:, :2].tolist()])
    return features, tags


def test_head_learns_separable_tags_and_keeps_best_checkpoint():
    train_x, train_tags = separable_data(200, seed=0)
    valid_x, valid_tags = separable_data(50, seed=1)
    config = HeadTrainConfig(steps=1000, lr=2e-2, eval_every=100)
    trained = train_head("pos", train_x, train_tags, valid_x, valid_tags, config)
    assert trained.metric == "accuracy"
    assert trained.score > 0.95
    assert trained.step % 100 == 0
    # the returned head is the kept checkpoint: re-scoring it gives the recorded score
    pred = [trained.head.predict(x) for x in valid_x]
    right = sum(p == t for ps, ts in zip(pred, valid_tags) for p, t in zip(ps, ts))
    assert right / sum(map(len, valid_tags)) == pytest.approx(trained.score)


def test_entity_tasks_are_scored_by_entity_f1():
    train_x, train_tags = separable_data(50, seed=2)
    trained = train_head("ner", train_x, train_tags, train_x, train_tags, HeadTrainConfig(steps=20, eval_every=10))
    assert trained.metric == "entity_f1"


def test_heads_save_and_reload(tmp_path):
    heads = {"ner": TagHead(16, ["B-PER", "I-PER", "O"]), "pos": TagHead(16, ["DT", "NN"])}
    manifest = HeadsManifest(BASE, AdapterIdentity("magnet", "ab" * 32), "bidirectional", ["ner", "pos"],
                             {"steps": 4000}, {"ner": {"entity_f1": 0.5}})
    save_heads(tmp_path, heads, manifest)
    loaded, loaded_manifest = load_heads(tmp_path)
    assert loaded_manifest == manifest
    x = torch.randn(5, 16)
    for task in ("ner", "pos"):
        assert loaded[task].labels == heads[task].labels
        assert torch.equal(loaded[task].linear.weight, heads[task].linear.weight)
        assert loaded[task].predict(x) == heads[task].eval().predict(x)
    assert json.loads((tmp_path / "labels.json").read_text())["pos"] == ["DT", "NN"]


def test_saved_heads_are_world_readable_under_a_strict_umask(tmp_path):
    heads = {"ner": TagHead(16, ["B-PER", "O"])}
    previous = os.umask(0o077)  # a private umask: plain writes would be 0600 files in a 0700 dir
    try:
        save_heads(tmp_path / "heads", heads, HeadsManifest(BASE, None, tasks=["ner"]))
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "heads", *(tmp_path / "heads").iterdir()]}
    assert modes == {"heads": 0o755, "heads.safetensors": 0o644, "labels.json": 0o644, "magnet.json": 0o644}


def test_manifest_mismatch_names_what_differs():
    adapter = AdapterIdentity("magnet", "ab" * 32)
    manifest = HeadsManifest(BASE, adapter)
    assert manifest.mismatch(BASE, adapter) == []
    assert manifest.mismatch(BASE, AdapterIdentity("magnet", "cd" * 32)) == ["adapter differs"]
    assert manifest.mismatch(BASE, None) == ["adapter differs"]
    other = BaseIdentity("big", "llama", 576, 30, 49152)
    assert "hidden_size: 16 != 576" in manifest.mismatch(other, adapter)


def test_missing_heads_dir_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tagging heads"):
        load_heads(tmp_path)


def test_sweep_layers_are_evenly_spaced_and_end_at_the_last():
    from magnet.tagging.layers import sweep_layers

    assert sweep_layers(30) == [4, 8, 11, 15, 19, 22, 26, 30]
    assert sweep_layers(2) == [1, 2] and sweep_layers(1) == [1]


def test_the_layer_whose_heads_score_best_on_select_is_chosen():
    """Layer 3's vectors carry the tags, layers 1 and 2 are noise: the sweep picks 3 from the
    select sentences' scores alone."""
    from types import SimpleNamespace

    from magnet.tagging.layers import choose_layer

    def sentences(tags):  # what choose_layer reads of a CoNLL sentence
        return [SimpleNamespace(tags={"pos": t, "ner": t}) for t in tags]

    train_x, train_tags = separable_data(120, seed=3)
    select_x, select_tags = separable_data(40, seed=4)
    g = torch.Generator().manual_seed(5)
    noise = lambda xs: [torch.randn(x.shape, generator=g) for x in xs]  # noqa: E731
    fit_x = {1: noise(train_x), 2: noise(train_x), 3: train_x}
    sel_x = {1: noise(select_x), 2: noise(select_x), 3: select_x}
    choice = choose_layer(["pos", "ner"], sentences(train_tags), fit_x, sentences(select_tags), sel_x,
                          HeadTrainConfig(steps=300, lr=2e-2, eval_every=100))
    assert choice.layer == 3
    assert sorted(choice.scores) == [1, 2, 3] and set(choice.scores[3]) == {"pos", "ner"}
    assert choice.mean(3) > 0.9 > max(choice.mean(1), choice.mean(2))


def test_manifests_without_a_layer_read_the_last_one(tmp_path):
    heads = {"ner": TagHead(16, ["O", "B-PER"])}
    save_heads(tmp_path / "old", heads, HeadsManifest(BASE, None, tasks=["ner"]))
    raw = json.loads((tmp_path / "old" / "magnet.json").read_text())
    del raw["feature_layer"]  # a manifest written before the layer sweep
    (tmp_path / "old" / "magnet.json").write_text(json.dumps(raw))
    _, manifest = load_heads(tmp_path / "old")
    assert manifest.feature_layer is None
    save_heads(tmp_path / "new", heads, HeadsManifest(BASE, None, tasks=["ner"], feature_layer=15))
    assert load_heads(tmp_path / "new")[1].feature_layer == 15
