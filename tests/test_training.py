"""Training on the tiny random Llama: views, losses, and a killed-and-resumed run."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from magnet.masks import CONTEXT
from magnet.training.config import TrainConfig
from magnet.training.corpus import Corpus
from magnet.training.loop import MagnetObjective, add_lora, train, train_step, view_spec
from magnet.training.objectives import cosent, info_nce
from magnet.training.views import MNTP, MSG, ViewSpec, make_view

TEXT = [
    "The quick brown fox jumps over the lazy dog and runs far away into the green forest today.",
    "A man is playing a guitar on the stage while the crowd sings along with him all night long.",
    "Paris is the capital of France and Berlin is the capital of Germany, two large European cities.",
    "She walked to the store, bought some milk, and came back home before the rain started to fall.",
] * 3


def spec(**changes) -> ViewSpec:
    base = dict(anchor_id=1, eos_id=2, mask_id=3, vocab_size=300, mask_rate=0.2, max_spans=2,
                span_range=(2, 6), causal_rate=0.0, gap_jitter=0.5, special_ids=frozenset({0, 1, 2, 3}))
    return ViewSpec(**{**base, **changes})


def tokens(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 300) for _ in range(n)]


def test_mntp_masking_rates_follow_the_paper():
    selected = masked = randomized = kept = 0
    for seed in range(300):
        original = [1] + tokens(60, seed) + [2]
        view = make_view(original[1:-1], spec(max_spans=1, span_range=(1, 1)), random.Random(seed))
        for j, role in enumerate(view.roles):
            if role != CONTEXT or j == 0 or j == len(original) - 1:
                continue
            if view.input_ids[j] != original[j]:
                masked += view.input_ids[j] == 3
                randomized += view.input_ids[j] != 3
        context = sum(1 for r in view.roles[1:-1] if r == CONTEXT)
        chosen = round(0.2 * context)
        selected += chosen
    kept = selected - masked - randomized
    assert masked / selected == pytest.approx(0.8, abs=0.03)
    # a random replacement can hit the original token, so "kept" absorbs a little of it
    assert randomized / selected == pytest.approx(0.1, abs=0.03)
    assert kept / selected == pytest.approx(0.1, abs=0.03)


def test_mntp_labels_sit_one_after_a_context_predictor():
    original = [1] + tokens(40) + [2]
    view = make_view(original[1:-1], spec(), random.Random(3))
    mntp = [(p, y) for p, y, o in zip(view.predictors, view.labels, view.objectives) if o == MNTP]
    assert mntp, "some context tokens must be selected"
    for predictor, label in mntp:
        assert view.roles[predictor] == CONTEXT and view.roles[predictor + 1] == CONTEXT
        assert label == original[predictor + 1]


def test_msg_labels_cover_exactly_the_span_tokens_and_the_token_after():
    original = [1] + tokens(40) + [2]
    view = make_view(original[1:-1], spec(), random.Random(5))
    msg_targets = sorted(p + 1 for p, o in zip(view.predictors, view.objectives) if o == MSG)
    span_slots = [j for j, r in enumerate(view.roles) if r >= 1]
    ends = [j + 1 for j in span_slots if j + 1 < len(view.roles) and view.roles[j + 1] != view.roles[j]]
    assert msg_targets == sorted(span_slots + ends)
    for p, y, o in zip(view.predictors, view.labels, view.objectives):
        if o == MSG:
            assert y == original[p + 1]
    # span tokens are never corrupted: they are what MSG teacher-forces
    assert all(view.input_ids[j] == original[j] for j in span_slots)


def test_causal_examples_are_plain_next_token_prediction():
    original = [1] + tokens(20) + [2]
    view = make_view(original[1:-1], spec(causal_rate=1.0), random.Random(0))
    assert set(view.roles) == {1} and view.positions == list(range(len(original)))
    assert view.labels == original[1:] and set(view.objectives) == {MSG}


def test_some_spans_end_the_text_so_eos_ends_a_fill():
    ends_at_eos = 0
    for seed in range(200):
        original = [1] + tokens(30, seed) + [2]
        view = make_view(original[1:-1], spec(trailing_rate=0.2), random.Random(seed))
        msg = [(p, y) for p, y, o in zip(view.predictors, view.labels, view.objectives) if o == MSG]
        ends_at_eos += any(p == len(original) - 2 and y == 2 for p, y in msg)
        assert view.roles[-1] == CONTEXT  # EOS itself is context, never a span token
    assert 0.15 * 200 <= ends_at_eos <= 0.3 * 200


def test_sentence_spans_cover_exactly_one_whole_sentence():
    period, checked = 5, 0
    for seed in range(100):
        rng = random.Random(seed)
        text = [period if rng.random() < 0.15 else rng.randrange(10, 300) for _ in range(40)]
        seq = [1] + text + [2]
        ends = [j for j, t in enumerate(seq) if t == period]
        sentences = [(a + 1, b) for a, b in zip(ends, ends[1:]) if 2 <= b - a <= 10]
        view = make_view(text, spec(max_spans=1, span_range=(2, 10), sentence_rate=1.0,
                                    sentence_end_ids=frozenset({period})), random.Random(seed))
        span = [j for j, r in enumerate(view.roles) if r == 1]
        # a window without a whole sentence of a fitting length falls back to a random span
        assert (span[0], span[-1]) in sentences or not sentences
        checked += bool(sentences)
    assert checked >= 80


def test_text_after_a_span_never_shares_the_span_positions():
    for seed in range(100):
        view = make_view(tokens(40, seed), spec(gap_jitter=0.5), random.Random(seed))
        for j in range(1, len(view.roles)):
            if view.roles[j - 1] >= 1 and view.roles[j] == CONTEXT:  # first token after a span
                span = [k for k, r in enumerate(view.roles[:j]) if r == view.roles[j - 1]]
                assert view.positions[j] >= view.positions[span[0]] + len(span)
                assert view.positions[j] <= view.positions[span[0]] + round(1.5 * len(span))
    exact = make_view(tokens(40), spec(gap_jitter=0.0), random.Random(1))
    assert exact.positions == list(range(len(exact.positions)))


def test_the_manifest_records_the_gap_distances_training_showed(tiny_model_dir, data_file, tmp_path):
    config = tiny_config(tiny_model_dir, data_file, tmp_path, gap_jitter=0.5)
    low, high = config.span_range()
    assert config.gap_distance() == (low, round(high * 1.5))
    assert TrainConfig(max_length=96, gap_jitter=0.0).gap_distance() == (1, 24)


def test_sscl_positive_is_cut_before_it_is_augmented(tiny_model_dir, data_file, tmp_path, tiny_loaded):
    long_line = " ".join(f"w{i}" for i in range(400))
    data = tmp_path / "long.txt"
    data.write_text(long_line + "\n")
    config = tiny_config(tiny_model_dir, data, tmp_path, sscl_max_length=70, sscl_batch_size=1,
                         augmenter="word_dropout")
    corpus = Corpus.build(config, tiny_loaded.tokenizer, view_spec(config, tiny_loaded.tokenizer, 300))
    decode = lambda ids: set(tiny_loaded.tokenizer.decode(ids[1 + len(corpus.instruction_ids):-1]).split())  # noqa: E731
    for step in range(20):
        (x,), (positive,) = corpus.sscl_batch(step, 0)
        x_words, positive_words = decode(x), decode(positive)
        assert len(x_words & positive_words) / len(x_words | positive_words) > 0.6


def test_evaluation_sentences_are_never_trained_on(tiny_model_dir, tmp_path, tiny_loaded):
    dev = tmp_path / "sts-dev.csv"  # an evaluation file given with --exclude
    dev.write_text("main-news\tx\t2012\t0001\t4.0\tA man plays a guitar.\tSomeone plays guitar.\n")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a man plays a guitar\tA guitarist is playing.\nThe sky is blue.\tThe sky looks blue.\n")
    data = tmp_path / "text.txt"
    data.write_text("Someone plays guitar.\n" + "\n".join(TEXT) + "\n")
    config = tiny_config(tiny_model_dir, data, tmp_path, pairs=(str(pairs),), exclude=(str(dev),))
    corpus = Corpus.build(config, tiny_loaded.tokenizer, view_spec(config, tiny_loaded.tokenizer, 300))
    assert ("The sky is blue.", "The sky looks blue.") in corpus.sscl_pairs
    assert all(a != "a man plays a guitar" for a, _ in corpus.sscl_pairs)  # matches the dev pair's sentence
    texts = [tiny_loaded.tokenizer.decode(c) for c in corpus.chunks]
    assert not any(t.strip() == "Someone plays guitar." for t in texts)


def test_wikitext_spacing_is_undone_before_training():
    from magnet.datasets import detokenize_wikitext

    raw = ('The film , released in 1 @,@ 000 cinemas ( mostly in the US ) , was well @-@ received . '
           'It cost $ 3 @.@ 5 million ; critics did n\'t mind the director \'s " bold " choice .')
    assert detokenize_wikitext(raw) == ('The film, released in 1,000 cinemas (mostly in the US), was '
                                        'well-received. It cost $3.5 million; critics didn\'t mind the '
                                        'director\'s "bold" choice.')


def test_stsb_files_train_as_their_sentences_each_once(tmp_path):
    from magnet.datasets import read_paragraphs

    stsb = tmp_path / "sts-train.csv"
    stsb.write_text('main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.\n'
                    'main-news\theadlines\t2013\t0002\t1.0\tA plane is taking off.\tHe said "yes.\textra\tfields\n')
    assert read_paragraphs(stsb) == ["A plane is taking off.", "An air plane is taking off.", 'He said "yes.']


def test_stsb_rows_scored_4_or_more_are_sscl_pairs(tmp_path):
    from magnet.datasets import read_pairs

    stsb = tmp_path / "sts-train.csv"
    stsb.write_text('main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.\n'
                    'main-news\theadlines\t2013\t0002\t3.8\tA man plays.\tA man sings.\n'
                    'main-news\theadlines\t2013\t0003\t4.0\tHe left.\tHe went away.\textra\tfields\n')
    assert read_pairs(stsb) == [("A plane is taking off.", "An air plane is taking off."), ("He left.", "He went away.")]


def test_sscl_positives_sit_on_the_diagonal():
    gen = torch.Generator().manual_seed(0)  # not the global RNG: what ran before must not decide it
    anchors = torch.randn(4, 8, generator=gen)
    right = info_nce(anchors, anchors + 0.01 * torch.randn(4, 8, generator=gen), 0.1)
    shuffled = info_nce(anchors, anchors.roll(1, dims=0), 0.1)
    assert right < 0.1 < shuffled


def test_cosent_is_low_when_cosines_follow_the_scores_and_high_when_they_run_against_them():
    gen = torch.Generator().manual_seed(0)  # not the global RNG: what ran before must not decide it
    a = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    noise = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    b = torch.stack([a[i] * (3 - i) + noise[i] * i for i in range(4)])  # cosine falls with i
    scores = torch.tensor([5.0, 3.0, 2.0, 0.5])
    assert cosent(a, b, scores, 20.0) < 0.5 < cosent(a, b, scores.flip(0), 20.0)
    # one ordered pair: log(1 + exp(scale * (cos_1 - cos_0)))
    cos = torch.nn.functional.cosine_similarity(a[:2], b[:2], dim=-1)
    expected = torch.log1p(torch.exp(20.0 * (cos[1] - cos[0])))
    assert torch.allclose(cosent(a[:2], b[:2], scores[:2], 20.0), expected, atol=1e-5)
    assert cosent(a[:2], b[:2], torch.tensor([2.0, 2.0]), 20.0) == 0.0  # ties order nothing


def stsb_file(tmp_path, rows: int = 40):
    """An STS-B file whose pairs fall in every split (magnet.splits decides by id)."""
    path = tmp_path / "stsb" / "sts-train.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(f"main-news\theadlines\t2013\t{i:04d}\t{i % 6}.0\tA man number {i} runs fast.\t"
                            f"The person {i} is running.\n" for i in range(rows)))
    return path


def test_graded_pairs_come_from_the_train_split_with_their_scores(tiny_model_dir, data_file, tmp_path, tiny_loaded):
    from magnet.datasets import read_stsb
    from magnet.splits import SELECT, TRAIN

    sts = stsb_file(tmp_path)
    config = tiny_config(tiny_model_dir, data_file, tmp_path, graded_pairs=(str(sts),), graded_weight=1.0,
                         select_stsb=str(sts))
    tokenizer = tiny_loaded.tokenizer
    corpus = Corpus.build(config, tokenizer, view_spec(config, tokenizer, 300))
    train_rows, select_rows = read_stsb(sts, TRAIN), read_stsb(sts, SELECT)
    assert train_rows and select_rows and sorted(corpus.graded) == sorted(train_rows)
    a, b, scores = corpus.graded_batch(step=3, micro=0)
    assert len(a) == len(b) == len(scores) == config.graded_batch == 4
    texts = {(tokenizer.decode(x[1 + len(corpus.instruction_ids):-1]).strip(), s) for x, s in zip(a, scores)}
    assert texts <= {(row[0], row[2]) for row in train_rows}
    assert corpus.graded_batch(step=3, micro=0) == (a, b, scores)  # the same on resume


def test_the_manifest_records_the_graded_pairs_as_training_data(tiny_model_dir, data_file, tmp_path, tiny_loaded):
    from dataclasses import replace

    from magnet.splits import file_sha256
    from magnet.training.checkpoints import manifest_for

    sts = stsb_file(tmp_path)
    config = tiny_config(tiny_model_dir, data_file, tmp_path, graded_pairs=(str(sts),), graded_weight=0.5)
    manifest = manifest_for(config, tiny_loaded, steps=1)
    assert manifest.objectives["graded"] == {"weight": 0.5, "scale": 20.0, "loss": "cosent", "pairs": ["sts-train.csv"]}
    assert [(r["file"], r["split"]) for r in manifest.data if r["file"] == "sts-train.csv"] == [("sts-train.csv", "train")]
    held = manifest_for(replace(config, exclude=(str(data_file),)), tiny_loaded, steps=1).extra["excluded"]
    assert held == [{"file": data_file.name, "sha256": file_sha256(data_file)}]  # what --exclude kept out, by content


def test_graded_pairs_need_a_weight_and_a_weight_needs_pairs(tiny_model_dir, data_file, tmp_path, tiny_loaded):
    sts = stsb_file(tmp_path)
    tokenizer = tiny_loaded.tokenizer
    for changes, message in (({"graded_pairs": (str(sts),)}, "graded-weight"), ({"graded_weight": 1.0}, "graded-pairs"),
                             ({"graded_pairs": (str(data_file),), "graded_weight": 1.0}, "0 scored pairs")):
        config = tiny_config(tiny_model_dir, data_file, tmp_path, **changes)
        with pytest.raises(ValueError, match=message):
            Corpus.build(config, tokenizer, view_spec(config, tokenizer, 300))


@pytest.fixture()
def data_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(" = Heading = \n" + "\n".join(TEXT) + "\n")
    return path


def tiny_config(tiny_model_dir, data_file, tmp_path, **changes) -> TrainConfig:
    base = dict(data=(str(data_file),), model=str(tiny_model_dir), output=str(tmp_path / "run"),
                max_length=32, batch_size=4, sscl_batch_size=4, sscl_max_length=96, min_sscl_words=5,
                max_steps=6, lr=1e-2, switch_at=0.5, checkpoint_every=2, quality_check=False,
                span_min=16, span_max=64, device="cpu", dtype="float32")  # exact on every CPU
    return TrainConfig(**{**base, **changes})


def test_each_loss_is_finite_and_falls_on_a_repeated_batch(tiny_loaded, tiny_model_dir, data_file, tmp_path):
    from magnet.loading import load_model, ModelSpec

    # all three objectives at equal weight from step 0, so none is traded for another
    config = tiny_config(tiny_model_dir, data_file, tmp_path, switch_at=0.0, weights_after=(1.0, 1.0, 1.0))
    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float32"))
    torch.manual_seed(0)  # the LoRA init, independent of what ran before
    model = add_lora(loaded.model, config.with_(lora_dropout=0.0))
    corpus = Corpus.build(config, loaded.tokenizer, view_spec(config, loaded.tokenizer, model.config.vocab_size))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    history = []
    for _ in range(8):
        losses = train_step(MagnetObjective(model), corpus, config, step=0, pad_id=0, device="cpu")  # same batch
        optimizer.step()
        optimizer.zero_grad()
        history.append(losses)
    for name in ("mntp", "sscl", "msg"):
        values = [h[name] for h in history]
        assert all(torch.isfinite(torch.tensor(values))), name
        assert values[-1] < values[0], f"{name} did not fall: {values}"


def test_the_graded_loss_falls_on_a_repeated_batch_and_trains_the_lora(tiny_model_dir, data_file, tmp_path):
    from magnet.loading import load_model, ModelSpec

    # the graded loss alone (the others weigh 0), so its fall is its own
    config = tiny_config(tiny_model_dir, data_file, tmp_path, switch_at=0.0, weights_after=(0.0, 0.0, 0.0),
                         graded_pairs=(str(stsb_file(tmp_path)),), graded_weight=1.0, lr=3e-3)
    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float32"))
    torch.manual_seed(0)
    model = add_lora(loaded.model, config.with_(lora_dropout=0.0))
    corpus = Corpus.build(config, loaded.tokenizer, view_spec(config, loaded.tokenizer, model.config.vocab_size))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    history = []
    for _ in range(8):
        losses = train_step(MagnetObjective(model), corpus, config, step=0, pad_id=0, device="cpu")
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        optimizer.step()
        optimizer.zero_grad()
        history.append(losses["graded"])
    assert all(math.isfinite(v) for v in history) and history[-1] < history[0], history


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tiny_model_dir, data_file, tmp_path):
    straight = tiny_config(tiny_model_dir, data_file, tmp_path, output=str(tmp_path / "straight"))
    assert train(straight, progress=False) is not None
    interrupted = straight.with_(output=str(tmp_path / "resumed"))
    assert train(interrupted, progress=False, stop_after=3) is None  # ends at step 3, like a kill
    assert not (tmp_path / "resumed" / "adapter").exists()
    # a checkpoint's adapter carries its manifest: a later phase started from it knows its steps
    from magnet.manifest import AdapterManifest

    checkpoint = AdapterManifest.load(tmp_path / "resumed" / "checkpoints" / "step-000003" / "adapter")
    from magnet.splits import file_sha256

    assert checkpoint.steps == 3 and checkpoint.data == [
        {"file": data_file.name, "rule": None, "sha256": file_sha256(data_file), "split": "train", "unit": "file"}]
    train(interrupted, resume=True, progress=False)
    a = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        for name in ("mntp", "sscl", "msg"):
            assert x[name] == pytest.approx(y[name], rel=1e-4, abs=1e-6), (x, y)
    from safetensors.torch import load_file

    left = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    right = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], rtol=1e-4, atol=1e-6)


def test_the_trained_adapter_loads_through_the_one_loader(tiny_model_dir, data_file, tmp_path):
    from magnet.loading import ModelSpec, load_model
    from magnet.manifest import AdapterManifest

    adapter = train(tiny_config(tiny_model_dir, data_file, tmp_path, max_steps=2), progress=False)
    manifest = AdapterManifest.load(adapter)
    assert manifest.steps == 2 and manifest.mask_token == "_" and manifest.base.hidden_size == 32
    assert (tmp_path / "run" / "losses.png").stat().st_size > 0
    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(adapter), device="cpu"))
    assert loaded.adapter_path == adapter and loaded.manifest == manifest
    assert manifest.objectives["msg"]["gap_distance"] == list(tiny_config(tiny_model_dir, data_file, tmp_path)
                                                              .gap_distance())


def test_checkpoints_and_the_adapter_are_written_without_warnings(tiny_model_dir, data_file, tmp_path):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter = train(tiny_config(tiny_model_dir, data_file, tmp_path, max_steps=2, checkpoint_every=1),
                        progress=False)
    assert (adapter / "adapter_model.safetensors").is_file()
    assert list((tmp_path / "run" / "checkpoints").glob("step-*/adapter/adapter_model.safetensors"))
    assert [str(w.message) for w in caught if "peft" in w.filename] == []


def test_the_adapter_is_world_readable_under_a_private_umask(tiny_model_dir, data_file, tmp_path):
    import os

    old = os.umask(0o077)
    try:
        adapter = train(tiny_config(tiny_model_dir, data_file, tmp_path, max_steps=1), progress=False)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [adapter, *adapter.iterdir()]}
    assert modes.pop("adapter") == 0o755 and set(modes.values()) == {0o644}, modes


def test_a_shipped_adapter_is_half_precision_and_loads_like_the_trained_one(tiny_model_dir, data_file, tmp_path):
    from safetensors import safe_open

    from magnet.engine import Engine
    from magnet.loading import ModelSpec
    from magnet.training.ship import ship_adapter

    trained = train(tiny_config(tiny_model_dir, data_file, tmp_path, max_steps=2), progress=False)
    shipped = ship_adapter(trained, tmp_path / "ship" / "adapter")
    with safe_open(shipped / "adapter_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert (shipped / "magnet.json").read_text() == (trained / "magnet.json").read_text()
    texts = ["A fox runs.", "The cat sleeps on the mat."]
    full, half = (Engine.from_spec(ModelSpec(model=str(tiny_model_dir), adapter=str(adapter), device="cpu",
                                             dtype="float32")).embed(texts) for adapter in (trained, shipped))
    torch.testing.assert_close(half.embeddings, full.embeddings, atol=2e-3, rtol=0)


def test_a_second_phase_records_the_first_in_its_manifest(tmp_path, tiny_loaded):
    from magnet.manifest import AdapterManifest
    from magnet.training.checkpoints import earlier_phase

    first = tmp_path / "first"
    first.mkdir()
    AdapterManifest(base=tiny_loaded.base, steps=480, data=["wiki.valid.raw"],
                    extra={"lr": 0.001, "quality": {"stsb": 80.1}}).save(first)
    assert earlier_phase(str(first)) == {"name": "first", "steps": 480, "data": ["wiki.valid.raw"], "lr": 0.001}
    plain = tmp_path / "plain"
    plain.mkdir()
    assert earlier_phase(str(plain)) == {"name": "plain"}


def test_interpolated_adapters_mix_their_factors_and_record_the_mix(tiny_model_dir, data_file, tmp_path):
    from safetensors.torch import load_file

    from magnet.engine import Engine
    from magnet.loading import ModelSpec
    from magnet.manifest import AdapterManifest
    from magnet.training.interpolate import interpolate_adapters

    end = train(tiny_config(tiny_model_dir, data_file, tmp_path, max_steps=4), progress=False)
    start = tmp_path / "run" / "checkpoints" / "step-000002" / "adapter"
    a, b = load_file(start / "adapter_model.safetensors"), load_file(end / "adapter_model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for toward in (0.0, 0.25, 1.0):
        mix = load_file(interpolate_adapters(start, end, toward, tmp_path / f"mix{toward}") / "adapter_model.safetensors")
        for k in (k for k in a if ".lora_A." in k):  # the update B·A is the mix of the two updates
            kb = k.replace(".lora_A.", ".lora_B.")
            expected = (1 - toward) * a[kb].float() @ a[k].float() + toward * b[kb].float() @ b[k].float()
            torch.testing.assert_close(mix[kb] @ mix[k], expected, atol=1e-5, rtol=0)
            assert mix[k].shape[0] == 2 * a[k].shape[0]
    manifest = AdapterManifest.load(tmp_path / "mix0.25")
    assert manifest.extra["interpolated"] == {"toward": 0.25, "start": {"name": "adapter", "steps": 2,
                                                                         "data": AdapterManifest.load(start).data, **{
        k: v for k, v in AdapterManifest.load(start).extra.items() if k != "quality"}}}
    assert "quality" not in manifest.extra and manifest.steps == 4
    texts = ["A fox runs.", "The cat sleeps on the mat."]  # the end itself, through the one loader
    same = Engine.from_spec(ModelSpec(model=str(tiny_model_dir), adapter=str(tmp_path / "mix1.0"), device="cpu",
                                      dtype="float32"))
    ref = Engine.from_spec(ModelSpec(model=str(tiny_model_dir), adapter=str(end), device="cpu", dtype="float32"))
    torch.testing.assert_close(same.embed(texts).embeddings, ref.embed(texts).embeddings)


def test_adapters_of_different_shapes_are_not_interpolated(tiny_model_dir, data_file, tmp_path):
    from magnet.training.interpolate import interpolate_adapters

    r4 = train(tiny_config(tiny_model_dir, data_file, tmp_path, max_steps=1, lora_r=4,
                           output=str(tmp_path / "r4")), progress=False)
    r8 = train(tiny_config(tiny_model_dir, data_file, tmp_path, max_steps=1, lora_r=8,
                           output=str(tmp_path / "r8")), progress=False)
    with pytest.raises(SystemExit, match=r"cannot be interpolated: r: 4 != 8"):
        interpolate_adapters(r4, r8, 0.5, tmp_path / "mix")
    with pytest.raises(SystemExit, match="--toward 1.5"):
        interpolate_adapters(r8, r8, 1.5, tmp_path / "mix")
    assert not (tmp_path / "mix").exists()


def test_causal_context_views_keep_context_clean_and_mntp_views_are_bidirectional():
    from magnet.masks import LEFT_CONTEXT

    hybrid = mntp_only = 0
    for seed in range(200):
        original = [1] + tokens(40, seed) + [2]
        view = make_view(original[1:-1], spec(context_role=LEFT_CONTEXT, mntp_view_rate=0.3), random.Random(seed))
        if set(view.roles) == {CONTEXT}:  # an MNTP-only view: bidirectional, corrupted, no spans
            mntp_only += 1
            assert view.input_ids != original and set(view.objectives) == {MNTP}
            continue
        hybrid += 1
        assert CONTEXT not in view.roles and LEFT_CONTEXT in view.roles
        assert view.input_ids == original  # next-token labels on clean text: nothing is masked
        for p, y, o in zip(view.predictors, view.labels, view.objectives):
            assert y == original[p + 1]
            assert o == (MNTP if view.roles[p] == LEFT_CONTEXT and view.roles[p + 1] == LEFT_CONTEXT else MSG)
    assert mntp_only / 200 == pytest.approx(0.3, abs=0.08) and hybrid > 100


def test_causal_gap_views_let_each_span_be_predicted_from_all_the_context_and_nothing_leak():
    from magnet.masks import LEFT_CONTEXT

    hybrid = labelled = 0
    for seed in range(200):
        original = [1] + tokens(40, seed) + [2]
        view = make_view(original[1:-1], spec(context_role=LEFT_CONTEXT, gap_role=CONTEXT), random.Random(seed))
        starts = [j for j in range(1, len(view.roles)) if view.roles[j] >= 1 and view.roles[j - 1] < 1]
        if not starts or view.causal:
            continue
        hybrid += 1
        # the token before each span reads all the context; the rest of it reads left to right
        assert [j for j, r in enumerate(view.roles) if r == CONTEXT] == [j - 1 for j in starts]
        assert view.input_ids == original
        mntp = [p for p, o in zip(view.predictors, view.objectives) if o == MNTP]
        assert all(p < starts[0] - 1 for p in mntp)  # a later context token could read its label through it
        labelled += len(mntp)
        msg = {p for p, o in zip(view.predictors, view.objectives) if o == MSG}
        assert {j - 1 for j in starts} <= msg  # each span's first token, from the token before it
    assert hybrid > 100 and labelled > 100


def reaches(view) -> torch.Tensor:
    """(T, T) bool: whether slot q's output can depend on slot k's input through any number of
    layers (the transitive closure of the view's attention mask)."""
    from magnet.masks import allowed_attention

    roles, positions = torch.tensor([view.roles]), torch.tensor([view.positions])
    step = allowed_attention(roles, roles, positions, positions)[0, 0] | torch.eye(len(view.roles), dtype=torch.bool)
    closure = step
    for _ in range(len(view.roles)):
        closure = (closure.float() @ step.float()).bool()
    return closure


@pytest.mark.parametrize("reading", ["causal_gap", "causal_gap_hidden"])
def test_no_label_of_a_gap_reading_can_be_read_by_its_predictor(reading):
    """causal_gap drops the MNTP labels after the first gap; causal_gap_hidden keeps them, since
    the context never reads the token before a gap, which read it."""
    from magnet.masks import LEFT_CONTEXT, MODE_ROLES, context_mode, gap_predictor_role

    mode = context_mode(reading)
    after_gap = 0
    for seed in range(60):
        original = [1] + tokens(30, seed) + [2]
        view = make_view(original[1:-1], spec(context_role=MODE_ROLES[mode], gap_role=gap_predictor_role(mode)),
                         random.Random(seed))
        reach = reaches(view)
        starts = [j for j in range(1, len(view.roles)) if view.roles[j] >= 1 and view.roles[j - 1] < 1]
        for p, y in zip(view.predictors, view.labels):
            if view.roles[p] >= 1 and view.roles[p + 1] < 1:
                continue  # a span's end predicts the text after it, which it reads by design (how it stops)
            assert view.input_ids[p + 1] != y or not reach[p, p + 1]  # the label is not in what p read
        after_gap += sum(1 for p, o in zip(view.predictors, view.objectives)
                         if o == MNTP and starts and p > starts[0] and view.roles[p] == LEFT_CONTEXT)
    assert (after_gap > 50) == (reading == "causal_gap_hidden")


def test_an_unknown_context_reading_is_refused_by_name(tiny_model_dir, data_file, tmp_path):
    with pytest.raises(ValueError, match="unknown context 'sideways': choose one of bidirectional, causal"):
        tiny_config(tiny_model_dir, data_file, tmp_path, context="sideways")


def test_the_manifest_records_how_the_context_was_read(tiny_model_dir, data_file, tmp_path, tiny_loaded):
    from magnet.training.checkpoints import manifest_for

    config = tiny_config(tiny_model_dir, data_file, tmp_path, context="causal", mntp_view_rate=0.4)
    manifest = manifest_for(config, tiny_loaded, 3)
    assert manifest.objectives["msg"]["context"] == "causal"
    assert manifest.objectives["mntp"]["view_rate"] == 0.4


def test_bf16_training_keeps_the_base_in_bf16_and_lora_in_fp32(tiny_model_dir, data_file, tmp_path):
    from magnet.training.loop import prepare_model

    config = tiny_config(tiny_model_dir, data_file, tmp_path, dtype="bfloat16")
    loaded, model = prepare_model(config, None)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}
    corpus = Corpus.build(config, loaded.tokenizer, view_spec(config, loaded.tokenizer, model.config.vocab_size))
    losses = train_step(MagnetObjective(model), corpus, config, step=0, pad_id=0, device="cpu")
    assert all(math.isfinite(v) for v in losses.values()) and losses["msg"] > 0
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


@pytest.mark.slow  # compiling the layers' forward and backward takes ~40 s on 2 cores
def test_compiled_layers_train_the_same_adapter_as_eager_ones(tiny_model_dir, data_file, tmp_path):
    from safetensors.torch import load_file

    from magnet.training.loop import prepare_model

    # fp32 and no LoRA dropout: nothing random differs between the two, so the runs must agree
    eager = tiny_config(tiny_model_dir, data_file, tmp_path, max_steps=3, lora_dropout=0.0,
                        output=str(tmp_path / "eager"))
    compiled = eager.with_(compile_layers=True, output=str(tmp_path / "compiled"))
    _, model = prepare_model(compiled, None)
    assert all(hasattr(layer.forward, "_torchdynamo_orig_callable") for layer in model.get_decoder().layers)
    runs = [train(config, progress=False) for config in (eager, compiled)]
    logs = [[json.loads(line) for line in (Path(c.output) / "log.jsonl").read_text().splitlines()]
            for c in (eager, compiled)]
    assert [r["step"] for r in logs[1]] == [1, 2, 3]
    for x, y in zip(*logs):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4), (x, y)
    left, right = (load_file(run / "adapter_model.safetensors") for run in runs)
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], rtol=1e-3, atol=1e-5)


def kl_setup(tiny_model_dir, data_file, tmp_path, **changes):
    """A LoRA'd tiny model and a corpus whose every view is causal (the KL's labels)."""
    from magnet.loading import ModelSpec, load_model

    config = tiny_config(tiny_model_dir, data_file, tmp_path, causal_rate=1.0, switch_at=0.0, **changes)
    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float32"))
    torch.manual_seed(0)
    model = add_lora(loaded.model, config.with_(lora_dropout=0.0))
    corpus = Corpus.build(config, loaded.tokenizer, view_spec(config, loaded.tokenizer, model.config.vocab_size))
    return config, model, corpus


def steps_of(config, model, corpus, n: int, lr: float) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    history = []
    for _ in range(n):
        history.append(train_step(MagnetObjective(model), corpus, config, step=0, pad_id=0, device="cpu"))
        optimizer.step()
        optimizer.zero_grad()
    return history


def test_the_kl_to_the_base_is_the_base_models_own_and_training_on_it_pulls_the_adapter_back(
        tiny_model_dir, data_file, tmp_path):
    from magnet.loading import ModelSpec, load_model
    from magnet.training.objectives import base_kl, collate_views, label_logits

    # MSG alone first: the adapter moves away from the base on causal text
    config, model, corpus = kl_setup(tiny_model_dir, data_file, tmp_path, weights_after=(0.0, 0.0, 1.0), kl_weight=1e-9)
    moved = steps_of(config, model, corpus, 6, lr=1e-2)
    assert moved[0]["kl"] < 1e-6  # a new LoRA (B = 0) is the base
    assert moved[-1]["kl"] > 1e-3

    # the KL reads the base model itself: the same figure from a separately loaded base
    batch = collate_views(corpus.views(0, 0), 0, "cpu")
    base = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float32")).model
    with torch.no_grad():
        adapted_logits = label_logits(model, batch)
        got = base_kl(model, batch, adapted_logits)
        want_base = torch.log_softmax(label_logits(base, batch), -1)
        adapted = torch.log_softmax(adapted_logits, -1)
    want = (want_base.exp() * (want_base - adapted)).sum(-1)
    assert got.shape == (int(batch.causal.sum()),) and batch.causal.all()
    assert torch.allclose(got, want, atol=1e-5)

    # the KL alone then pulls the adapter back toward the base
    pulled = steps_of(config.with_(weights_after=(0.0, 0.0, 0.0), kl_weight=1.0), model, corpus, 6, lr=1e-2)
    assert pulled[-1]["kl"] < pulled[0]["kl"] / 2, [h["kl"] for h in pulled]


def test_without_a_kl_weight_the_base_is_never_read(tiny_model_dir, data_file, tmp_path, monkeypatch):
    config, model, corpus = kl_setup(tiny_model_dir, data_file, tmp_path)

    def refuse():
        raise AssertionError("the base was read with kl_weight 0")

    monkeypatch.setattr(model, "disable_adapter", refuse)
    losses = train_step(MagnetObjective(model), corpus, config, step=0, pad_id=0, device="cpu")
    assert losses["kl"] == 0.0 and losses["msg"] > 0


def test_a_kl_weight_needs_causal_views_and_the_manifest_records_it(tiny_model_dir, data_file, tmp_path, tiny_loaded):
    from magnet.training.checkpoints import manifest_for

    tokenizer = tiny_loaded.tokenizer
    for changes in ({"kl_weight": 0.5, "causal_rate": 0.0}, {"kl_weight": -1.0}):
        with pytest.raises(ValueError, match="causal-rate"):
            view_spec(tiny_config(tiny_model_dir, data_file, tmp_path, **changes), tokenizer, 300)
    config = tiny_config(tiny_model_dir, data_file, tmp_path, kl_weight=0.5, causal_rate=0.2)
    assert manifest_for(config, tiny_loaded, steps=1).objectives["kl"] == {"weight": 0.5, "to": "base model",
                                                                          "views": "causal"}
    assert "kl" not in manifest_for(config.with_(kl_weight=0.0), tiny_loaded, steps=1).objectives


def test_bits_dropout_drops_p_of_the_elements_and_scales_the_rest_as_nn_dropout():
    from magnet.training.dropout import BitsDropout

    dropout = BitsDropout(0.05)
    x = torch.ones(8, 96, 1536, dtype=torch.bfloat16)
    torch.manual_seed(0)
    out = dropout(x)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.05) < 0.002, dropped
    assert torch.allclose(out[out != 0].float(), torch.tensor(1 / 0.95), rtol=1e-2)
    torch.manual_seed(0)
    assert torch.equal(dropout(x), out)  # seeded: the same mask again (a resumed run)
    assert not torch.equal(dropout(x), out)
    assert torch.equal(dropout.eval()(x), x) and torch.equal(BitsDropout(0.0)(x), x)
    with pytest.raises(ValueError, match="dropout probability"):
        BitsDropout(1.0)


def test_every_lora_dropout_of_a_training_model_draws_bits(tiny_model_dir, data_file, tmp_path):
    from magnet.training.dropout import BitsDropout
    from magnet.training.loop import prepare_model

    config = tiny_config(tiny_model_dir, data_file, tmp_path, lora_dropout=0.1)
    _, model = prepare_model(config, None)
    dropouts = [d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)
                for d in m.lora_dropout.values()]
    layers = model.config.num_hidden_layers * len(config.lora_targets)
    assert len(dropouts) == layers and all(isinstance(d, BitsDropout) and d.p == pytest.approx(0.1, abs=1e-4)
                                           for d in dropouts)


def recipe_phases(**first):
    return [{"name": "fill", "max_steps": 2, "weights_before": [1, 0, 3], "weights_after": [1, 0, 3], **first},
            {"name": "sscl", "max_steps": 2, "switch_at": 0, "weights_before": [1, 2, 1],
             "weights_after": [1, 2, 1], "lr": 5e-3}]


def test_a_recipe_runs_its_phases_in_order_each_from_the_one_before(tiny_model_dir, data_file, tmp_path):
    from magnet.manifest import AdapterManifest
    from magnet.training.phases import phase_list, run_phases

    base = tiny_config(tiny_model_dir, data_file, tmp_path, max_steps=6)
    raw = recipe_phases()
    raw[1]["lora_r"] = 4  # does not apply: the phase trains the fill phase's adapter, of rank 16
    phases = phase_list(base, raw)
    adapter = run_phases(phases, progress=False)
    run = tmp_path / "run"
    assert adapter == run / "sscl" / "adapter" and (run / "fill" / "adapter" / "adapter_model.safetensors").is_file()
    fill, sscl = (json.loads((run / name / "config.json").read_text()) for name in ("fill", "sscl"))
    assert fill["init_adapter"] is None and fill["weights_before"] == [1, 0, 3] and fill["lr"] == base.lr
    assert sscl["init_adapter"] == str(run / "fill" / "adapter") and sscl["lr"] == 5e-3
    assert sscl["max_length"] == base.max_length  # the recipe's common settings reach every phase
    logs = [[json.loads(line) for line in (run / name / "log.jsonl").read_text().splitlines()]
            for name in ("fill", "sscl")]
    assert [len(log) for log in logs] == [2, 2] and logs[0][0]["sscl"] == 0 and logs[1][0]["sscl"] > 0
    assert AdapterManifest.load(adapter).extra["init_adapter"]["steps"] == 2  # the fill phase's 2 steps
    assert sscl["lora_r"] == base.lora_r == AdapterManifest.load(adapter).extra["lora"]["r"]  # what was trained
    assert AdapterManifest.load(adapter).extra["excluded"] == []  # no --exclude: the manifest says so


def test_a_stopped_recipe_goes_on_where_it_stopped_when_run_again(tiny_model_dir, data_file, tmp_path):
    from magnet.training.phases import phase_list, run_phases

    phases = phase_list(tiny_config(tiny_model_dir, data_file, tmp_path, checkpoint_every=1), recipe_phases())
    assert run_phases(phases, progress=False, stop_after=1) is None
    run = tmp_path / "run"
    assert not phases[0].done and not (run / "sscl").exists()
    adapter = run_phases(phases, progress=False)
    assert [json.loads(line)["step"] for line in (run / "fill" / "log.jsonl").read_text().splitlines()] == [1, 2]
    written = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    assert run_phases(phases, progress=False) == adapter  # all done: nothing trains again
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == written


@pytest.mark.parametrize("phases, words", [
    ([], ["non-empty list"]),
    ([{"max_steps": 2}], ["phases[0]", "needs a name"]),
    ([{"name": "../up"}], ["phases[0]", "folder name"]),
    ([{"name": "a"}, {"name": "a"}], ["phases[1]", "'a' is taken"]),
    ([{"name": "a", "output": "elsewhere"}], ["phases[0] (a)", "output is set by the recipe"]),
    ([{"name": "a"}, {"name": "b", "max_stepz": 2}], ["phases[1] (b)", "unknown training setting", "max_stepz"]),
])
def test_a_bad_phase_is_refused_naming_it(phases, words, tiny_model_dir, data_file, tmp_path):
    from magnet.training.phases import phase_list

    with pytest.raises(ValueError) as refused:
        phase_list(tiny_config(tiny_model_dir, data_file, tmp_path), phases)
    assert all(word in str(refused.value) for word in words), str(refused.value)


def test_magnet_train_runs_a_recipe_file_and_says_where_its_last_adapter_is(tiny_model_dir, data_file, tmp_path,
                                                                           capsys):
    from dataclasses import asdict

    from magnet.cli import main

    settings = {k: v for k, v in asdict(tiny_config(tiny_model_dir, data_file, tmp_path)).items()
                if k not in ("output", "extra")}
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({**settings, "phases": recipe_phases()}))
    assert main(["train", "--config", str(recipe), "--output", str(tmp_path / "out"), "--no-progress"]) == 0
    assert f"adapter written to {tmp_path / 'out' / 'sscl' / 'adapter'} (the last of 2 phases)" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "fill" / "config.json").read_text())["max_steps"] == 2


def test_the_recipes_in_the_repository_are_valid_recipes(tmp_path):
    from magnet.training.cli import read_config_file
    from magnet.training.phases import phase_list

    recipes = sorted((Path(__file__).parents[1] / "training" / "recipes").glob("*.json"))
    assert [r.name for r in recipes] == ["g6.json"]
    for recipe in recipes:
        raw = read_config_file(str(recipe))
        settings = {k: v for k, v in raw.items() if k != "phases"}
        phases = phase_list(TrainConfig.from_dict({**settings, "output": str(tmp_path)}), raw["phases"])
        assert [p.name for p in phases] == ["fill", "sscl", "graded"]
        assert {p.config.context for p in phases} == {"causal_gap"}
        assert phases[2].config.init_adapter == str(tmp_path / "sscl" / "adapter")


def test_the_step_bar_follows_magnet_progress(tiny_model_dir, data_file, tmp_path, capsys, monkeypatch):
    train(tiny_config(tiny_model_dir, data_file, tmp_path / "on", max_steps=2), progress=True)
    assert "magnet train" in capsys.readouterr().err
    monkeypatch.setenv("MAGNET_PROGRESS", "0")  # off for logs and CI, as every other bar
    train(tiny_config(tiny_model_dir, data_file, tmp_path / "off", max_steps=2), progress=True)
    assert "magnet train" not in capsys.readouterr().err


def test_quality_check_scores_items_spread_over_the_select_split(tmp_path, monkeypatch):
    """Not the first N select stories (one stretch of the file), but N spread over the split,
    as `magnet eval` subsamples."""
    from types import SimpleNamespace

    from magnet.datasets import read_roc_stories
    from magnet.evaluation.sizes import spread
    from magnet.splits import SELECT
    from magnet.training import quality

    path = tmp_path / "rocstories" / "cloze_test_val_spring2016.csv"  # the name its split rule reads
    path.parent.mkdir()
    path.write_text("InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
                    "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
                    + "".join(f"story-{i},A{i}.,B{i}.,C{i}.,D{i}.,E{i}.,F{i}.,1\n" for i in range(200)))
    scored = []
    monkeypatch.setattr(quality, "infill_perplexity", lambda model, tok, anchor, stories, **kw: scored.append(stories)
                        or 10.0)
    config = SimpleNamespace(select_stsb=None, data=[str(path)], eval_stories=5, context="causal_gap")
    engine = SimpleNamespace(model=None, tokenizer=None, anchor_id=0)
    assert quality.scores(config, engine, hybrid=True, prefix="adapted") == {"adapted_roc_ppl_hybrid": 10.0}
    select = read_roc_stories(path, SELECT)
    assert len(select) > 20 and scored == [spread(select, 5)] and scored[0] != select[:5]
    assert scored[0][-1] in select[len(select) // 2:]  # reaches the second half of the split
