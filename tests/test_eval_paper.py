"""`magnet eval paper` and its new rows (WikiText PPL, repetition, cloze) on the tiny random Llama."""
from __future__ import annotations

import json
import math
from pathlib import Path

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
    ppl, tokens, _ = causal_perplexity(tiny_engine, [window])
    assert tokens == 12 and ppl == pytest.approx(math.exp(mean_nll), rel=1e-4)
    two, tokens, _ = causal_perplexity(tiny_engine, windows[:2])
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
    return {"roc": {"adapted_hybrid": 15.0, "adapted_causal": 17.0, "adapted_wrong_suffix": 19.0, "base_causal": 20.0},
            "conll": {"base_causal": probe(0.8), "adapted": probe(0.9)},
            "stsb": {"adapted": 83.0}, "wikitext": {"base": 20.0, "adapted": 21.0},
            "repetition": {"wikitext": rep, "roc": rep},
            "cloze": {"adapted_infill": 0.65, "base_left_guess": 0.2, "adapted_left_guess": 0.3}}


def test_a_target_whose_bound_lies_in_its_figures_interval_is_unsure():
    results = passing_results()
    results["stsb"]["adapted_interval"] = [83.5, 86.0]  # 84.9 measured, all of it above 82
    results["stsb"]["adapted"] = 84.9
    results["roc"]["hybrid_causal_interval"] = [0.85, 0.95]  # hybrid / left to right 15 / 17 = 0.88
    results["cloze"]["adapted_infill_interval"] = [0.07, 0.28]
    results["cloze"]["adapted_infill"] = 0.152
    status = {c["target"]: c for c in check_criteria(results)}
    assert status["STS-B Spearman >= 82"]["status"] == "PASS"
    roc = status["ROC hybrid fill PPL <= 0.9 x the same adapter's left-to-right PPL"]
    assert roc["status"] == "UNSURE" and roc["pass"] is True  # 0.88 passes, 0.95 would not
    assert roc["interval"] == pytest.approx([0.85 * 17.0, 0.95 * 17.0])
    assert status["cloze greedy infill hit rate >= 60%"]["status"] == "FAIL"  # all of the interval misses
    results["stsb"]["adapted_interval"] = [80.5, 86.0]
    lines = format_criteria(check_criteria(results))
    assert "UNSURE  STS-B Spearman >= 82 (value 84.9, bound 82, 95% interval 80.5-86)" in lines


def test_criteria_mark_a_row_that_misses_its_target_fail_and_a_seen_row_seen():
    assert all(c["status"] == "PASS" for c in check_criteria(passing_results()))
    results = passing_results()
    results["stsb"]["adapted"] = 81.9
    results["roc"]["adapted_hybrid"] = 15.4  # > 0.9 x the adapter's own left to right (17.0)
    results["wikitext"]["adapted"] = 22.1  # > 1.1 x base
    results["cloze"]["adapted_left_guess"] = 0.7  # its own left guess beats its fill
    failed = {c["target"] for c in check_criteria(results) if c["status"] == "FAIL"}
    assert failed == {"STS-B Spearman >= 82", "ROC hybrid fill PPL <= 0.9 x the same adapter's left-to-right PPL",
                      "WikiText-2 PPL <= 1.1 x base",
                      "cloze greedy infill above the better left-context guess (base or adapted)"}
    results["roc"]["adapted_wrong_suffix"] = 15.0  # another story's suffix as good as the true one: not read
    assert "ROC PPL with another story's sentences 4-5 above the true suffix's (the suffix is read)" in {
        c["target"] for c in check_criteria(results) if c["status"] == "FAIL"}
    del results["cloze"]
    lines = format_criteria(check_criteria(results))
    assert "FAIL  STS-B Spearman >= 82 (value 81.9, bound 82)" in lines
    assert any(line.startswith("FAIL  cloze greedy infill hit rate >= 60%") and "missing" in line for line in lines)
    seen = check_criteria(results, {"roc": "trained on it", "stsb": "trained on it"})
    judged = {c["row"]: c["status"] for c in seen}
    assert judged["roc"] == judged["stsb"] == "SEEN" and judged["conll"] == "PASS"
    assert all(c["value"] is None and c["pass"] is None for c in seen if c["status"] == "SEEN")
    assert sum(line.startswith("SEEN  ") for line in format_criteria(seen)) == 3  # 2 ROC targets + STS-B


def test_spread_takes_evenly_spaced_items_in_order():
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1, 2], 0) == [1, 2] and spread([1, 2], 5) == [1, 2]


NAMES = ["Tom", "Ana", "Raj", "Eve", "Bo", "Kim", "Lee", "Max", "Sam", "Ola", "Ivy", "Ned"]
FOODS = ["a sandwich", "some milk", "an apple", "rice", "bread", "soup"]
PARAGRAPHS = [
    " The fox , which is quick and brown , jumps over the lazy dog in the field every single morning .",
    " A man is playing a guitar on the stage while the crowd sings along to every word of the old song .",
    " Paris is the capital of France , and Berlin is the capital of Germany , as every pupil learns .",
    " She walked to the store , bought some milk , and came back home before the rain started to fall .",
]
STSB_PAIRS = [("A man plays.", "A man is playing.", 4.5), ("A dog runs.", "Stocks fell.", 0.2),
              ("Kids swim.", "Children are swimming.", 4.0), ("The sky is blue.", "A cat sleeps.", 1.0)]


def roc_row(i: int) -> str:
    name, food = NAMES[i % len(NAMES)], FOODS[i % len(FOODS)]
    return (f"id{i},{name} was hungry.,{name} went to the store.,{name} bought {food}.,{name} ate it.,"
            f"{name} was full.,Nope.,1")


def write_data(tmp_path) -> list[str]:
    """Tiny files in the real formats, under the names magnet/splits.py has rules for (so each is
    split as the real file is) -> the paper command's data flags. Report split: ROC stories 2, 4,
    9, 11; WikiText articles 6 and 15; CoNLL train.txt's document 1 is select, the rest train."""
    data = tmp_path / "data"
    for folder in ("stsb", "conll2003", "rocstories", "wikitext2"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    sts = data / "stsb" / "sts-dev.csv"
    sts.write_text("".join(f"main\tx\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(STSB_PAIRS)))
    (data / "conll2003" / "train.txt").write_text((SAMPLE.rstrip("\n") + "\n\n") * 4)
    (data / "conll2003" / "valid.txt").write_text(SAMPLE)
    roc = data / "rocstories" / "cloze_test_val_spring2016.csv"
    roc.write_text("InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
                   "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
                   + "".join(roc_row(i) + "\n" for i in range(12)))
    wiki = data / "wikitext2" / "wiki.valid.raw"
    wiki.write_text("".join(f" = Article {i} =\n\n" + "\n".join(PARAGRAPHS[i % 4:] + PARAGRAPHS[:i % 4]) + "\n"
                            for i in range(16)))
    return ["--stsb", str(sts), "--conll-train", str(data / "conll2003" / "train.txt"),
            "--conll-valid", str(data / "conll2003" / "valid.txt"), "--roc", str(roc), "--wikitext", str(wiki)]


TINY = sizes.EvalSizes(stsb_pairs=0, conll_train=0, conll_select=0, conll_valid=0, probe_steps=20, roc_stories=0,
                       wikitext_windows=3, window_tokens=24, wikitext_prefixes=2, roc_prefixes=2,
                       continuation_tokens=12, fill_tokens=4, cloze_items=5)


def paper_argv(tmp_path, tiny_model_dir, adapter, *extra) -> list[str]:
    return ["eval", "paper", "--quick", *write_data(tmp_path), "--model", str(tiny_model_dir),
            "--adapter", str(adapter), "--device", "cpu", "--output", str(tmp_path / "out"), *extra]


def test_eval_repetition_scores_the_base_beside_an_adapter_with_an_interval(tiny_loaded, tiny_model_dir, tmp_path,
                                                                            monkeypatch, capsys):
    monkeypatch.setenv("MAGNET_CACHE_DIR", str(tmp_path / "cache"))
    adapter = save_random_lora(tiny_loaded, tmp_path / "adapter")
    data = dict(zip(*[iter(write_data(tmp_path))] * 2))  # flag -> file
    argv = ["eval", "repetition", "--wikitext", data["--wikitext"], "--roc", data["--roc"], "--model",
            str(tiny_model_dir), "--prefixes", "2", "--max-tokens", "12", "--device", "cpu"]
    assert main([*argv, "--adapter", str(adapter)]) == 0
    printed = capsys.readouterr().out
    for name in ("WikiText", "ROC"):  # both models on each prefix set, and the ratio with its interval
        assert printed.count(f"\t{name} prefixes: Rep-Sen") == 2
    assert printed.count("Rep-4 adapted / base x") == 2 and printed.count("95% interval over prefixes") == 2
    assert main([*argv, "--adapter", "none"]) == 0  # no adapter: one model, no ratio
    printed = capsys.readouterr().out
    assert printed.count("prefixes: Rep-Sen") == 2 and "adapted / base" not in printed


def test_paper_runs_end_to_end_on_the_report_split(tiny_loaded, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAGNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("magnet.evaluation.paper.QUICK", TINY)
    adapter = save_random_lora(tiny_loaded, tmp_path / "adapter")
    assert main(paper_argv(tmp_path, tiny_model_dir, adapter)) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "paper.json").read_text())
    assert (tmp_path / "out" / "paper.md").read_text() in printed
    assert (tmp_path / "out" / "paper.png").stat().st_size > 0
    assert report["split"] == "report" and set(report["results"]) == set(report["rows"]) == {
        "stsb", "conll", "roc", "wikitext", "repetition", "cloze"}
    assert all(row["seconds"] >= 0 for row in report["results"].values())
    expected = [line.metric for line in paper_report.table_lines(report["results"])]
    assert [line["metric"] for line in report["table"]] == expected and len(expected) == 20
    for line in report["table"]:
        assert line["first"] is not None and math.isfinite(line["first"]) and line["seen"] is None
        assert f"| {line['metric']} |" in printed
    assert "seen in training" not in printed
    assert report["model"]["adapter"]["sha256"] and report["model"]["adapted"].endswith("+adapter")
    # probes: fit on train.txt's train documents (2-4), chosen on its select document (1), scored on valid
    assert report["results"]["conll"]["adapted"]["sentences"] == {"train": 9, "selection": 3, "valid": 3}
    for side in ("base_causal", "adapted"):  # both sides swept the tiny model's two layers, and say which they read
        probes = report["results"]["conll"][side]
        assert set(probes["sweep"]) == {"1", "2"} and probes["layer"] in (1, 2) and probes["layers"] == 2
    assert "layer and checkpoint chosen on 3 of its select documents (base layer" in printed
    roc = report["results"]["roc"]
    assert roc["stories"] == 4  # the report stories only
    assert set(roc) >= {"adapted_causal", "adapted_no_suffix", "adapted_hybrid", "adapted_wrong_suffix", "base_causal"}
    assert report["data"]["--roc"]["split"] == "report" and report["data"]["--stsb"]["split"] == "report"
    assert report["results"]["cloze"]["items"] == 5
    assert len(report["criteria"]) == 13
    assert printed.count("PASS  ") + printed.count("FAIL  ") + printed.count("UNSURE  ") == 13
    low, high = report["results"]["stsb"]["adapted_interval"]
    assert low <= report["results"]["stsb"]["adapted"] <= high
    wiki = report["results"]["wikitext"]
    assert wiki["ratio_interval"][0] <= wiki["adapted"] / wiki["base"] <= wiki["ratio_interval"][1]
    conll = report["results"]["conll"]
    for task in ("pos", "chunk", "ner"):  # x100 adapted - base, over the scored sentences; the counts not kept
        low, high = conll["difference_intervals"][task]
        assert low <= 100 * (conll["adapted"][task]["score"] - conll["base_causal"][task]["score"]) <= high
        assert "sentence_counts" not in conll["adapted"][task]
    # 4 stories and 5 cloze items: intervals wide enough to hold some bounds, which are then not judged
    unsure = [c for c in report["criteria"] if c["status"] == "UNSURE"]
    assert unsure and all(c["interval"][0] <= c["bound"] <= c["interval"][1] for c in unsure)
    # the adapter changes the model: base and adapted differ (the same numbers would mean one model twice)
    assert report["results"]["wikitext"]["base"] != pytest.approx(report["results"]["wikitext"]["adapted"])
    cached = sorted(p.name.split("-", 2)[2].rsplit("-", 1)[0] for p in (tmp_path / "cache" / "generations").iterdir())
    # 2 models x (2 prefix sets + cloze guesses) + the adapted model's fills, best_of 1 and 4
    assert cached == ["continue"] * 6 + ["infill-best-of-1", "infill-best-of-4"]


def test_paper_marks_rows_seen_in_training_and_resumes_an_interrupted_run(tiny_loaded, tiny_model_dir, tmp_path,
                                                                        monkeypatch, capsys):
    from magnet.evaluation import paper_rows
    from magnet.manifest import AdapterManifest
    from magnet.splits import data_record

    monkeypatch.setenv("MAGNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("magnet.evaluation.paper.QUICK", TINY)
    argv_data = write_data(tmp_path)
    roc, sts = argv_data[argv_data.index("--roc") + 1], argv_data[argv_data.index("--stsb") + 1]
    adapter = save_random_lora(tiny_loaded, tmp_path / "adapter")
    manifest = AdapterManifest.load(adapter)
    # trained on the ROC file's report stories (a record with its hash) and, by an older
    # adapter's name-only entry, on all of wiki.valid.raw; on STS-B only its train split
    records = [data_record(roc, "report"), "wiki.valid.raw", {**data_record(sts, "train")}]
    AdapterManifest(**{**manifest.__dict__, "data": records}).save(adapter)

    def interrupted(run):
        raise KeyboardInterrupt

    monkeypatch.setitem(paper_rows.ROWS, "cloze", paper_rows.Row(interrupted, paper_rows.ROWS["cloze"].data))
    with pytest.raises(KeyboardInterrupt):
        main(paper_argv(tmp_path, tiny_model_dir, adapter))
    kept = json.loads((tmp_path / "out" / "paper.json").read_text())
    assert list(kept["results"]) == ["stsb", "conll", "roc", "wikitext", "repetition"]  # all but the cloze row
    assert "Not measured yet: cloze" in (tmp_path / "out" / "paper.md").read_text()
    capsys.readouterr()

    def measured_again(run):
        raise AssertionError("a finished row was measured again")

    monkeypatch.undo()
    monkeypatch.setenv("MAGNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("magnet.evaluation.paper.QUICK", TINY)
    for name in ("stsb", "conll", "roc", "wikitext", "repetition"):
        monkeypatch.setitem(paper_rows.ROWS, name, paper_rows.Row(measured_again, paper_rows.ROWS[name].data))
    assert main(paper_argv(tmp_path, tiny_model_dir, adapter, "--resume")) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "paper.json").read_text())
    assert report["results"]["cloze"]["items"] == 5
    for row in ("roc", "wikitext", "repetition"):  # ROC report stories; wiki by name; prefixes of both
        assert set(report["results"][row]) == {"seen_in_training"}
    assert "cloze_test_val_spring2016.csv" in report["results"]["roc"]["seen_in_training"]
    assert "wiki.valid.raw" in report["results"]["wikitext"]["seen_in_training"]
    assert "seconds" in report["results"]["stsb"]  # dev was not trained on: measured and reported
    seen_lines = [line for line in report["table"] if line["seen"]]
    assert {line["row"] for line in seen_lines} == {"roc", "wikitext", "repetition"}
    assert all(line["first"] is None and line["second"] is None for line in seen_lines)
    for line in seen_lines:  # printed without a figure
        assert f"| {line['metric']} | seen in training | | |" in printed
    statuses = {c["row"]: c["status"] for c in report["criteria"]}
    assert statuses["roc"] == statuses["wikitext"] == statuses["repetition"] == "SEEN"
    assert not any(line.startswith(("PASS  ROC", "FAIL  ROC", "PASS  WikiText", "FAIL  WikiText", "PASS  Rep-4",
                                    "FAIL  Rep-4")) for line in printed.splitlines())
    assert printed.count("SEEN  ") == 7  # 2 ROC, WikiText, 2 Rep-4, 2 spacing targets


def test_overlap_compares_content_and_split_and_counts_an_old_name_as_the_whole_file(tmp_path):
    from magnet.evaluation.data_files import file_split
    from magnet.evaluation.overlap import overlap
    from magnet.splits import data_record

    flags = write_data(tmp_path)
    roc = Path(flags[flags.index("--roc") + 1])
    assert overlap([data_record(roc, "train")], roc, "report") is None  # trained on other stories: clean
    assert "report split" in overlap([data_record(roc, "train"), data_record(roc, "report")], roc, "report")
    assert overlap([data_record(roc, None)], roc, "report")  # the whole file read
    assert overlap(["cloze_test_val_spring2016.csv"], roc, "report")  # an older adapter: names only
    assert overlap(["wiki.valid.raw"], roc, "report") is None
    other = tmp_path / "elsewhere" / "rocstories" / roc.name  # same name, other content: a hash decides
    other.parent.mkdir(parents=True)
    other.write_text(roc.read_text() + roc_row(99) + "\n")
    assert overlap([data_record(other, "report")], roc, "report") is None
    sts = flags[flags.index("--stsb") + 1]
    with pytest.raises(SystemExit, match=r"stsb/sts-dev.csv has no select documents .* its select documents are in "
                                         r"\.\./shared/data/stsb/sts-train.csv"):
        file_split(sts, "select", "--stsb")
    assert file_split(tmp_path / "mine.csv", "report", "--stsb") is None  # your own file: scored whole


def test_data_an_earlier_phase_read_counts_as_seen_by_the_phases_after_it(tmp_path):
    from types import SimpleNamespace

    from magnet.evaluation.overlap import first_overlap, training_records
    from magnet.splits import data_record

    flags = write_data(tmp_path)
    roc = Path(flags[flags.index("--roc") + 1])
    wiki = Path(flags[flags.index("--wikitext") + 1])
    first = {"name": "phase1", "data": [data_record(roc, None)]}  # read the whole story file
    second = {"name": "phase2", "data": [data_record(wiki, "train")], "init_adapter": first}
    manifest = SimpleNamespace(data=[data_record(wiki, "train")], extra={"init_adapter": second})
    engine = SimpleNamespace(loaded=SimpleNamespace(adapter_path=tmp_path, manifest=manifest))
    records = training_records(engine)
    assert "cloze_test_val_spring2016.csv" in first_overlap(records, [(roc, "report")])  # two phases back
    assert first_overlap(records, [(wiki, "report")]) is None  # every phase read wiki's train split only
    # a mix (training/interpolate.py) keeps its start adapter's records under interpolated.start
    mixed = SimpleNamespace(data=[data_record(wiki, "train")],
                            extra={"interpolated": {"toward": 0.8, "start": {"name": "s", "init_adapter": first}}})
    mixed_records = training_records(SimpleNamespace(loaded=SimpleNamespace(adapter_path=tmp_path, manifest=mixed)))
    assert "cloze_test_val_spring2016.csv" in first_overlap(mixed_records, [(roc, "report")])


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


def test_eval_tagging_notes_when_the_heads_read_the_scored_file():
    from magnet.evaluation.tagging import heads_note

    training = {"train": "train.txt", "valid": "valid.txt"}  # as the shipped heads' manifest has it
    assert "fit on train.txt" in heads_note(training, Path("data/conll2003/train.txt"))
    assert "chosen on valid.txt" in heads_note(training, Path("data/conll2003/valid.txt"))
    assert heads_note(training, Path("other.txt")) is None and heads_note({}, Path("valid.txt")) is None


def test_each_split_has_its_own_cloze_items():
    from collections import Counter

    from magnet.evaluation.cloze import ITEMS_FILES, items_file

    report, select = load_items(ITEMS_FILES["report"]), load_items(ITEMS_FILES["select"])
    assert len(report) == len(select) == 46
    assert not {i.text for i in report} & {i.text for i in select}  # no item scores both
    assert Counter(i.kind for i in report) == Counter(i.kind for i in select)  # the same kinds, as many of each
    assert items_file("train") == items_file("select") != items_file("report")


@pytest.mark.parametrize("split", ["report", "select"])
def test_the_paper_cloze_row_scores_the_items_of_its_split(split, monkeypatch):
    from magnet.evaluation import paper_rows
    from magnet.evaluation.cloze import items_file

    scored = []
    monkeypatch.setattr(paper_rows, "cloze_scores", lambda base, adapted, items, *a: scored.append(items) or {})
    run = paper_rows.PaperRun(None, None, {}, {}, TINY, split=split)
    assert paper_rows.cloze_row(run) == {"items_file": items_file(split).name}
    assert [i.text for i in scored[0]] == [i.text for i in sizes.spread(load_items(items_file(split)), 5)]
    assert paper_rows.ROWS["cloze"].data(run) == [(items_file(split), None)]
