"""The tagging pipeline on the tiny random Llama: features, train-tagger, Tagger, eval."""
from __future__ import annotations

import json

import pytest
import torch

from magnet.cli import main
from magnet.errors import InvalidInputError, UnknownTaskError
from magnet.tagging.features import conll_features, featurize, fit_and_select_features
from magnet.tagging.heads import HeadsMismatchError
from magnet.tagging.tagger import Tagger
from magnet.tagging.words import join_words

SAMPLE = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
lives VBZ B-VP O
in IN B-PP O
Brussels NNP B-NP B-LOC
. . O O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
on IN B-PP O
Thursday NNP B-NP O
it PRP B-NP O
disagreed VBD B-VP O
. . O O
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGNET_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.txt"
    path.write_text(SAMPLE)
    return path


def model_args(tiny_model_dir) -> list[str]:
    return ["--model", str(tiny_model_dir), "--adapter", "none", "--device", "cpu"]


def train(tiny_model_dir, sample, out, *extra) -> None:
    argv = ["train-tagger", "--train", str(sample), "--out", str(out),
            "--steps", "300", "--eval-every", "50", "--lr", "3e-2", "--dropout", "0", *model_args(tiny_model_dir), *extra]
    assert main(argv) == 0


@pytest.fixture
def heads_dir(tiny_model_dir, sample, cache, tmp_path):
    out = tmp_path / "heads"
    train(tiny_model_dir, sample, out)
    return out


def count_calls(monkeypatch, engine, reading: str, layers: list | None = None) -> list[int]:
    """The number of inputs of each model forward for word vectors (Engine.word_vectors_at) in
    `reading` (a feature mode); the layers each call asked for are appended to `layers`."""
    calls = []
    original = engine.word_vectors_at

    def counted(inputs, spans, mode, asked):
        if mode == reading:
            calls.append(len(inputs))
            if layers is not None:
                layers.append(list(asked))
        return original(inputs, spans, mode, asked)

    monkeypatch.setattr(engine, "word_vectors_at", counted)
    return calls


def test_features_are_computed_once(tiny_engine, sample, cache, monkeypatch):
    calls = count_calls(monkeypatch, tiny_engine, "bidirectional")
    sentences, first = conll_features(tiny_engine, "bidirectional", sample, None)
    assert sum(calls) == 3 and len(sentences) == 3
    assert list(first) == [tiny_engine.n_layers]  # the last layer when none is asked for
    assert [f.shape for f in first[tiny_engine.n_layers]] == [(9, 32), (6, 32), (9, 32)]
    again_sentences, again = conll_features(tiny_engine, "bidirectional", sample, None)
    assert sum(calls) == 3, "second run recomputed the features instead of reading the cache"
    assert all(torch.equal(a, b) for a, b in zip(first[tiny_engine.n_layers], again[tiny_engine.n_layers]))
    assert len(list((cache / "features").glob("*.safetensors"))) == 1
    conll_features(tiny_engine, "bidirectional", sample, 2)  # another sentence count: another entry
    assert sum(calls) == 5


def test_cached_features_match_the_engine(tiny_engine, sample, cache):
    sentences, cached = conll_features(tiny_engine, "causal", sample, None, layers=[1, 2])
    direct = featurize(tiny_engine, "causal", [s.words for s in sentences], [1, 2])
    assert not torch.allclose(direct[1][0], direct[2][0], atol=1e-2)  # two layers, two readings
    for a, b in zip(cached[1] + cached[2], direct[1] + direct[2]):
        assert torch.allclose(a, b, atol=1e-2, rtol=1e-2)  # the cache stores float16


def test_heads_train_reload_and_tag_text(tiny_engine, heads_dir):
    tagger = Tagger.load(tiny_engine, heads_dir)
    assert sorted(tagger.tasks) == ["chunk", "ner", "pos"]
    manifest = json.loads((heads_dir / "magnet.json").read_text())
    assert manifest["feature_mode"] == "bidirectional-pair" and manifest["adapter"] is None
    assert set(manifest["training"]["layer_sweep"]) == {"1", "2"}  # the tiny model's two layers, swept
    assert manifest["feature_layer"] == max((1, 2), key=lambda k: (manifest["training"]["layer_sweep"][str(k)], -k))
    assert (manifest["training"]["train_sentences"], manifest["training"]["select_sentences"]) == (2, 1)
    text = "Peter Blackburn lives in Brussels. The European Commission said on Thursday it disagreed."
    [out] = tagger.tag([text], task="ner")
    assert out["words"][:6] == ["Peter", "Blackburn", "lives", "in", "Brussels", "."]
    assert len(out["tags"]) == len(out["words"])
    assert set(out["tags"]) <= set(tagger.heads["ner"].labels)
    for e in out["entities"]:
        assert text[e["start"]:e["end"]] == e["text"]
        assert e["label"] in {"PER", "LOC", "ORG", "MISC"}


def test_tagger_fits_its_training_sentences(tiny_engine, heads_dir):
    """Two sentences fit (a file of one's own: its last third chooses), 300 steps at lr 3e-2: a
    linear head memorises them."""
    tagger = Tagger.load(tiny_engine, heads_dir)
    words = [["Peter", "Blackburn", "lives", "in", "Brussels", "."]]
    [ner] = tagger.tag(words=words, task="ner")
    assert ner["tags"] == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    assert ner["entities"] == [{"text": "Peter Blackburn", "label": "PER", "start": 0, "end": 2},
                               {"text": "Brussels", "label": "LOC", "start": 4, "end": 5}]
    [pos] = tagger.tag(words=words, task="pos")
    assert pos["tags"] == ["NNP", "NNP", "VBZ", "IN", "NNP", "."] and "entities" not in pos


def test_unknown_task_lists_the_loaded_tasks(tiny_engine, heads_dir):
    tagger = Tagger.load(tiny_engine, heads_dir)
    with pytest.raises(UnknownTaskError, match="'srl'.*pos, chunk, ner") as err:
        tagger.tag(["Peter lives here."], task="srl")
    assert err.value.status == 422


@pytest.mark.parametrize("texts, words, message", [
    (["   "], None, "input 0 has no words"),
    (None, [["a", ""]], r"words\[0\]\[1\] is empty"),
    (["a"], [["a"]], "either texts or words"),
    ([], None, "nothing to tag"),
])
def test_bad_input_is_a_422(tiny_engine, heads_dir, texts, words, message):
    tagger = Tagger.load(tiny_engine, heads_dir)
    with pytest.raises(InvalidInputError, match=message):
        tagger.tag(texts, words, task="ner")


def test_mismatched_heads_are_refused(tiny_engine, heads_dir):
    path = heads_dir / "magnet.json"
    manifest = json.loads(path.read_text())
    manifest["adapter"] = {"name": "magnet-7b", "sha256": "0" * 64}
    path.write_text(json.dumps(manifest))
    with pytest.raises(HeadsMismatchError, match="adapter magnet-7b .*but the model is .*no adapter"):
        Tagger.load(tiny_engine, heads_dir)
    manifest["adapter"] = None
    manifest["base"]["hidden_size"] = 576
    path.write_text(json.dumps(manifest))
    with pytest.raises(HeadsMismatchError, match="hidden_size: 576 != 32"):
        Tagger.load(tiny_engine, heads_dir)


def test_causal_heads_read_causal_states(tiny_engine, tiny_model_dir, sample, cache, tmp_path, monkeypatch):
    out = tmp_path / "causal"
    train(tiny_model_dir, sample, out, "--causal", "--tasks", "ner")
    tagger = Tagger.load(tiny_engine, out)
    assert tagger.tasks == ["ner"] and tagger.manifest.feature_mode == "causal"
    calls = count_calls(monkeypatch, tiny_engine, "causal")
    tagger.tag(["Peter lives in Brussels."], task="ner")
    assert calls == [1]


def test_eval_tagging_prints_scores(tiny_model_dir, heads_dir, tmp_path, capsys):
    fitted = tmp_path / "fitted.txt"  # the two sentences the heads fit on (the third chose)
    fitted.write_text(SAMPLE[:SAMPLE.index("The DT")])
    argv = ["eval", "tagging", "--data", str(fitted), "--heads", str(heads_dir), "--json",
            *model_args(tiny_model_dir)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["sentences"] == 2 and report["mode"] == "bidirectional-pair"
    assert set(report["scores"]) == {"pos", "chunk", "ner"}
    assert report["scores"]["pos"]["accuracy"] == 1.0  # evaluated on its own training data
    assert 0.0 <= report["scores"]["ner"]["f1"] <= 1.0
    with pytest.raises(SystemExit, match="add --causal|drop --causal"):
        main([*argv, "--causal"])


def test_eval_without_heads_says_what_to_do(tiny_model_dir, sample, tmp_path):
    argv = ["eval", "tagging", "--data", str(sample), "--heads", str(tmp_path / "none"), *model_args(tiny_model_dir)]
    with pytest.raises(SystemExit, match="(?s)no tagging heads.*magnet train-tagger"):
        main(argv)


def test_engine_code_changes_invalidate_cached_features(tiny_engine, sample, cache, monkeypatch):
    calls = count_calls(monkeypatch, tiny_engine, "bidirectional")
    conll_features(tiny_engine, "bidirectional", sample, None)
    monkeypatch.setattr("magnet.tagging.features.code_fingerprint", lambda: "edited")
    conll_features(tiny_engine, "bidirectional", sample, None)
    assert sum(calls) == 6


def conll_documents(count: int) -> str:
    """A CoNLL file of `count` one-sentence documents, each sentence naming its document."""
    return "".join(f"-DOCSTART- -X- -X- O\n\nDocument NN B-NP O\nd{i} CD I-NP O\n. . O O\n\n" for i in range(count))


def test_heads_fit_on_train_documents_and_choose_on_select_documents(tiny_engine, cache, tmp_path):
    """CoNLL train (its split rule, by file name): fit and choose sentences come from disjoint
    documents of the two splits, as magnet/splits.py assigns them."""
    from magnet.splits import SELECT, TRAIN, keep

    path = tmp_path / "conll2003" / "train.txt"
    path.parent.mkdir()
    path.write_text(conll_documents(40))
    (fit, _), (select, _) = fit_and_select_features(tiny_engine, "bidirectional", path, 0, 0)
    fit_docs, select_docs = {s.words[1] for s in fit}, {s.words[1] for s in select}
    assert fit_docs and select_docs and not fit_docs & select_docs
    assert len(fit_docs) + len(select_docs) == 40
    # a document's key is its number in the file, from 1 (the reader's)
    assert fit_docs == {f"d{i}" for i in range(40) if keep(path, str(i + 1), TRAIN)}
    assert select_docs == {f"d{i}" for i in range(40) if keep(path, str(i + 1), SELECT)}


def test_heads_are_never_chosen_on_the_report_split(tiny_engine, cache, tmp_path):
    path = tmp_path / "conll2003" / "valid.txt"
    path.parent.mkdir()
    path.write_text(conll_documents(4))
    with pytest.raises(SystemExit, match="report split.*eval tagging"):
        fit_and_select_features(tiny_engine, "bidirectional", path, 0, 0)


def test_paired_word_vectors_are_the_shifted_output_then_the_own_one(tiny_engine):
    """bidirectional-pair: a word = [mean of the outputs before its tokens ; mean of their own
    outputs]; the first half is exactly the `bidirectional` reading."""
    text, spans = "Peter lives in Brussels", [[(0, 5), (6, 11), (12, 14), (15, 23)]]
    [paired] = tiny_engine.paired_token_states([text], spans)
    [shifted] = tiny_engine.token_states([text], spans)
    hidden = tiny_engine.model.config.hidden_size
    assert paired.shape == (4, 2 * hidden)
    assert torch.allclose(paired[:, :hidden], shifted, atol=1e-6)
    assert not torch.allclose(paired[:, hidden:], shifted, atol=1e-3)  # its own output: another vector


def test_the_tagger_reads_the_layer_its_heads_were_trained_on(tiny_engine, tiny_model_dir, sample, cache, tmp_path,
                                                               monkeypatch):
    out = tmp_path / "layer1"
    train(tiny_model_dir, sample, out, "--layer", "1", "--tasks", "ner")
    manifest = json.loads((out / "magnet.json").read_text())
    assert manifest["feature_layer"] == 1 and "layer_sweep" not in manifest["training"]
    tagger = Tagger.load(tiny_engine, out)
    asked: list = []
    count_calls(monkeypatch, tiny_engine, "bidirectional-pair", asked)
    words = [["Peter", "lives", "in", "Brussels", "."]]
    tagger.tag(words=words, task="ner")
    assert asked == [[1]]
    # the head applied to layer 1's vectors, not the last layer's
    texts, spans = zip(*(join_words(w) for w in words))
    [first] = tiny_engine.word_vectors(tiny_engine.word_inputs(list(texts)), list(spans), "bidirectional-pair", 1)
    [last] = tiny_engine.word_vectors(tiny_engine.word_inputs(list(texts)), list(spans), "bidirectional-pair")
    assert not torch.allclose(first, last, atol=1e-3)


def test_a_layer_the_model_lacks_is_refused(tiny_model_dir, sample, cache, tmp_path, tiny_engine):
    with pytest.raises(SystemExit, match="--layer '3': give auto or a layer from 1 to 2"):
        train(tiny_model_dir, sample, tmp_path / "x", "--layer", "3")
    out = tmp_path / "heads"
    train(tiny_model_dir, sample, out, "--layer", "2", "--tasks", "ner")
    manifest = json.loads((out / "magnet.json").read_text())
    manifest["feature_layer"] = 7  # heads of a deeper model
    (out / "magnet.json").write_text(json.dumps(manifest))
    with pytest.raises(HeadsMismatchError, match="read layer 7 of a model with 2"):
        Tagger.load(tiny_engine, out)
