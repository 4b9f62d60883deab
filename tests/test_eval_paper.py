"""`magnet eval paper` and its new rows (WikiText PPL, repetition, cloze) on the tiny random Llama."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from magnet.cli import main
from magnet.evaluation import paper_report, sizes
from magnet.evaluation.cloze import ClozeItem, first_word, hit_rate, is_hit, load_items
from magnet.evaluation.criteria import check_criteria, format_criteria
from magnet.evaluation.data_files import REPO_ROOT, find_data_file
from magnet.evaluation.repetition import rep_n, rep_sen, repetition_scores, split_sentences
from magnet.evaluation.sizes import spread
from magnet.evaluation.wikitext import causal_perplexity, token_windows
from magnet.masks import AttentionMode

from test_loading import save_random_lora  # noqa: E402 (a tiny LoRA adapter that changes outputs)
from test_tagging_tagger import SAMPLE  # noqa: E402 (three CoNLL sentences)


def test_rep_sen_and_rep_4_count_repeats_within_a_generation():
    twice = "The cat sat down. The cat sat down."
    assert split_sentences(twice) == ["The cat sat down.", "The cat sat down."]
    assert rep_sen(twice) == pytest.approx(0.5)  # 1 - 1 unique / 2
    # words: The cat sat down. The cat sat down. -> 5 four-grams, the first and last equal
    assert rep_n(twice) == pytest.approx(1 - 4 / 5)
    assert rep_sen("One. Two! Three? Two!") == pytest.approx(1 - 3 / 4)
    assert rep_sen("No end mark") == 0.0 and rep_n("too short") == 0.0  # nothing repeated
    scores = repetition_scores([twice, "a b c d e"])  # per generation, then the mean
    assert scores["rep_sen"] == pytest.approx(0.25) and scores["rep_4"] == pytest.approx(0.1)


def test_spaced_punctuation_counts_marks_written_after_a_space():
    from magnet.evaluation.repetition import spaced_punctuation

    assert spaced_punctuation("Paris . It is big , and old.") == pytest.approx(2 / 3)
    assert spaced_punctuation("It costs 3.5 euros, or so.") == pytest.approx(0.0)  # 3.5 is no mark
    assert spaced_punctuation("no marks") == 0.0


def test_window_perplexity_is_exp_of_the_mean_token_nll_of_a_plain_forward(tiny_engine):
    paragraphs = ["The quick brown fox jumps over the lazy dog.", "A man is playing a guitar on the stage."]
    ids = tiny_engine.tokenizer("\n".join(paragraphs), add_special_tokens=False)["input_ids"]
    windows = token_windows(tiny_engine.tokenizer, paragraphs, 12)
    assert len(windows) == len(ids) // 12 and sum(windows, []) == ids[: 12 * len(windows)]  # no overlap
    window = windows[1]
    inputs = torch.tensor([[tiny_engine.anchor_id] + window])
    with torch.no_grad():
        logits = tiny_engine.model(inputs).logits[0, :-1]  # Hugging Face's own causal forward
    mean_nll = float(F.cross_entropy(logits, inputs[0, 1:]))
    ppl, tokens = causal_perplexity(tiny_engine, [window])
    assert tokens == 12 and ppl == pytest.approx(math.exp(mean_nll), rel=1e-4)
    two, tokens = causal_perplexity(tiny_engine, windows[:2])
    assert tokens == 24 and two != pytest.approx(ppl)


def test_causal_embedding_is_the_plain_forward_at_the_last_token(tiny_engine):
    text = ["A man is playing a guitar."]
    seq = tiny_engine.embed_ids(text[0], tiny_engine.instruction, truncate=False)
    with torch.no_grad():
        plain = tiny_engine.model.get_decoder()(torch.tensor([seq])).last_hidden_state[0, -1]
    causal = tiny_engine.embed(text, normalize=False, mode=AttentionMode.CAUSAL).embeddings[0]
    bidirectional = tiny_engine.embed(text, normalize=False).embeddings[0]  # the default stays bidirectional
    assert torch.allclose(causal, plain, atol=1e-5)
    assert not torch.allclose(bidirectional, plain, atol=1e-3)


def test_cloze_hits_compare_the_first_word_without_case_or_punctuation():
    item = ClozeItem("Today is ___, so tomorrow will be Saturday.", ("friday",))
    assert item.prefix == "Today is " and item.suffix == ", so tomorrow will be Saturday."
    assert is_hit(" Friday, so", item) and is_hit("FRIDAY.", item) and is_hit('"friday"', item)
    assert not is_hit("Thursday", item) and not is_hit("", item) and not is_hit("a Friday", item)
    assert first_word("  B. ") == "b"
    assert hit_rate(["Friday", "Monday"], [item, item]) == pytest.approx(0.5)
    shipped = load_items()
    assert len(shipped) >= 40 and all(i.prefix.strip() and i.answers for i in shipped)
    assert all(a == first_word(a) for i in shipped for a in i.answers)


def passing_results() -> dict:
    probe = lambda s: {t: {"score": s} for t in ("pos", "chunk", "ner")}  # noqa: E731
    rep = {"base": {"rep_4": 0.10, "rep_sen": 0.0, "spaced_punctuation": 0.0},
           "adapted": {"rep_4": 0.11, "rep_sen": 0.0, "spaced_punctuation": 0.005}}
    return {"roc": {"adapted_hybrid": 15.0, "base_causal": 20.0},
            "conll": {"base_causal": probe(0.8), "adapted": probe(0.9)},
            "stsb": {"adapted": 81.0}, "wikitext": {"base": 20.0, "adapted": 22.0},
            "repetition": {"wikitext": rep, "roc": rep}, "cloze": {"adapted_infill": 0.5, "base_left_guess": 0.2}}


def test_criteria_mark_a_row_that_misses_its_target_fail():
    assert all(c["pass"] for c in check_criteria(passing_results()))
    results = passing_results()
    results["stsb"]["adapted"] = 79.9
    results["roc"]["adapted_hybrid"] = 16.5  # > 0.8 x 20
    del results["cloze"]
    failed = {c["target"] for c in check_criteria(results) if not c["pass"]}
    assert failed == {"STS-B dev Spearman >= 80", "ROC hybrid infill PPL <= 0.8 x base left-to-right PPL",
                      "cloze infill hit rate above the base's left-context guess"}
    lines = format_criteria(check_criteria(results))
    assert "FAIL  STS-B dev Spearman >= 80 (value 79.9, bound 80)" in lines
    assert any(line.startswith("FAIL  cloze") and "missing" in line for line in lines)


def test_spread_takes_evenly_spaced_items_in_order():
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1, 2], 0) == [1, 2] and spread([1, 2], 5) == [1, 2]


STORY = "Tom was hungry.,He went to the store.,He bought a sandwich.,He ate it.,He was full.,Nope.,1"
WIKI = """ = Tiny Article =

 The fox , which is quick and brown , jumps over the lazy dog in the field every single morning .
 A man is playing a guitar on the stage while the crowd sings along to every word of the old song .
 Paris is the capital of France , and Berlin is the capital of Germany , as every pupil learns .
 She walked to the store , bought some milk , and came back home before the rain started to fall .
"""


def write_data(tmp_path) -> list[str]:
    """Tiny files in the real formats -> the paper command's data flags."""
    sts = tmp_path / "sts.csv"
    pairs = [("A man plays.", "A man is playing.", 4.5), ("A dog runs.", "Stocks fell.", 0.2),
             ("Kids swim.", "Children are swimming.", 4.0), ("The sky is blue.", "A cat sleeps.", 1.0)]
    sts.write_text("".join(f"main\tx\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(pairs)))
    conll = tmp_path / "conll.txt"
    conll.write_text(SAMPLE)
    roc = tmp_path / "roc.csv"
    roc.write_text("InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
                   "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
                   + "".join(f"id{i},{STORY}\n" for i in range(3)))
    wiki = tmp_path / "wiki.valid.raw"
    wiki.write_text(WIKI)
    return ["--stsb", str(sts), "--conll-train", str(conll), "--conll-valid", str(conll), "--roc", str(roc),
            "--wikitext", str(wiki)]


TINY = sizes.EvalSizes(stsb_pairs=0, conll_train=2, conll_select=1, conll_valid=0, probe_steps=20, roc_stories=2,
                       wikitext_windows=3, window_tokens=24, wikitext_prefixes=2, roc_prefixes=2,
                       continuation_tokens=12, fill_tokens=4)


def test_paper_runs_end_to_end_and_writes_every_row(tiny_loaded, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAGNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("magnet.evaluation.paper.QUICK", TINY)
    adapter = save_random_lora(tiny_loaded, tmp_path / "adapter")
    argv = ["eval", "paper", "--quick", *write_data(tmp_path), "--model", str(tiny_model_dir),
            "--adapter", str(adapter), "--device", "cpu", "--output", str(tmp_path / "out")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "paper.json").read_text())
    assert (tmp_path / "out" / "paper.md").read_text() in printed
    assert (tmp_path / "out" / "paper.png").stat().st_size > 0
    assert set(report["results"]) == {"stsb", "conll", "roc", "wikitext", "repetition", "cloze"}
    assert all(row["seconds"] >= 0 for row in report["results"].values())
    expected = [line.metric for line in paper_report.table_lines(report["results"])]
    assert [line["metric"] for line in report["table"]] == expected and len(expected) == 17
    for line in report["table"]:
        assert line["base"] is not None and math.isfinite(line["base"])
        assert f"| {line['metric']} |" in printed
    assert report["model"]["adapter"]["sha256"] and report["model"]["adapted"].endswith("+adapter")
    assert report["results"]["conll"]["adapted"]["sentences"] == {"train": 2, "selection": 1, "valid": 3}
    assert report["results"]["wikitext"]["tokens"] == 3 * 24
    assert report["results"]["cloze"]["items"] == len(load_items())
    assert len(report["criteria"]) == 11 and printed.count("PASS  ") + printed.count("FAIL  ") == 11
    # the adapter changes the model: base and adapted differ (the same numbers would mean one model twice)
    assert report["results"]["wikitext"]["base"] != pytest.approx(report["results"]["wikitext"]["adapted"])
    cached = sorted(p.name.split("-", 2)[2].rsplit("-", 1)[0] for p in (tmp_path / "cache" / "generations").iterdir())
    # 2 models x (2 prefix sets + cloze guesses) + the adapted model's fills, best_of 1 and 4
    assert cached == ["continue"] * 6 + ["infill-best-of-1", "infill-best-of-4"]


def test_a_missing_data_file_fails_naming_its_flag_before_loading_a_model(tmp_path, capsys):
    argv = ["eval", "paper", *write_data(tmp_path), "--roc", str(tmp_path / "nope.csv"), "--model", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"^--roc .*nope\.csv: no such file \(looked for .*nope\.csv\)$"):
        main(argv)


def test_relative_data_paths_fall_back_to_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_data_file("pyproject.toml", "--x") == REPO_ROOT / "pyproject.toml"
    (tmp_path / "pyproject.toml").write_text("")
    assert find_data_file("pyproject.toml", "--x") == tmp_path / "pyproject.toml"  # the working directory first
    with pytest.raises(SystemExit, match="--wikitext missing.raw: no such file"):
        find_data_file("missing.raw", "--wikitext")
