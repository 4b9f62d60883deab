"""The train / select / report splits: by document, disjoint, complete, fixed, and recognised
by content when an evaluation asks whether training saw its rows."""
from pathlib import Path

import pytest

from magnet.datasets import read_articles, read_paragraphs, read_pairs, read_roc_stories, read_stsb, normalized
from magnet.splits import REPORT, SELECT, SPLITS, TRAIN, data_record, keep, rule_for, seen_in_training
from magnet.tagging.conll import read_conll

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WIKI = DATA / "wikitext2" / "wiki.valid.raw"
ROC = DATA / "rocstories" / "cloze_test_val_spring2016.csv"
STS_TRAIN, STS_DEV = DATA / "stsb" / "sts-train.csv", DATA / "stsb" / "sts-dev.csv"
CONLL_TRAIN, CONLL_VALID = DATA / "conll2003" / "train.txt", DATA / "conll2003" / "valid.txt"


def test_roc_stories_fall_in_exactly_one_split_in_the_stated_shares():
    everything = read_roc_stories(ROC)
    parts = {split: read_roc_stories(ROC, split) for split in SPLITS}
    assert sorted(map(tuple, everything)) == sorted(tuple(s) for split in SPLITS for s in parts[split])
    for split, share in rule_for(ROC).shares:
        assert abs(len(parts[split]) / len(everything) - share) < 0.04, split


def test_wikitext_is_split_by_article_never_inside_one():
    articles = read_articles(WIKI)
    assert len(articles) == 60
    by_split = {split: set(read_paragraphs(WIKI, split)) for split in SPLITS}
    for title, paragraphs in articles:
        homes = {split for split, kept in by_split.items() if set(paragraphs) & kept}
        assert len(homes) == 1, title  # every paragraph of an article in the same one split
    assert all(by_split[split] for split in SPLITS)


def test_stsb_select_pairs_share_no_sentence_with_train_pairs_and_dev_only_reports():
    train = {normalized(t) for a, b, _ in read_stsb(STS_TRAIN, TRAIN) for t in (a, b)}
    select = {normalized(t) for a, b, _ in read_stsb(STS_TRAIN, SELECT) for t in (a, b)}
    assert len(select) > 1000 and len(train) > 5000
    assert not train & select
    assert read_stsb(STS_DEV, TRAIN) == [] and read_stsb(STS_DEV, SELECT) == []
    assert len(read_stsb(STS_DEV, REPORT)) == 1500
    assert not {normalized(a) for a, _ in read_pairs(STS_TRAIN, TRAIN)} & select


def test_conll_probes_fit_on_train_documents_choose_on_select_report_on_valid():
    fit, choose = read_conll(CONLL_TRAIN, split=TRAIN), read_conll(CONLL_TRAIN, split=SELECT)
    assert len(fit) + len(choose) == len(read_conll(CONLL_TRAIN)) and len(choose) > 1000
    assert read_conll(CONLL_TRAIN, split=REPORT) == [] and read_conll(CONLL_VALID, split=TRAIN) == []
    assert len(read_conll(CONLL_VALID, split=REPORT)) == len(read_conll(CONLL_VALID))


def test_the_splits_are_fixed():
    # a hash of (file rule, document key): no file order, no count, no machine in it. A change
    # here moves documents between training and the reported table: never do it silently.
    assert [len(read_roc_stories(ROC, split)) for split in SPLITS] == [1132, 381, 358]
    assert [len(read_stsb(STS_TRAIN, split)) for split in SPLITS] == [4606, 829, 0]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        keep(ROC, "x", "dev")


def test_a_users_own_text_is_all_train(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("First paragraph.\n\nSecond paragraph.\n")
    assert read_paragraphs(text, TRAIN) == ["First paragraph.", "Second paragraph."]
    assert read_paragraphs(text, SELECT) == [] and read_paragraphs(text, REPORT) == []


def test_the_overlap_check_fires_on_the_same_content_under_any_name(tmp_path):
    copy = tmp_path / "renamed.csv"
    copy.write_bytes(ROC.read_bytes())
    trained = [data_record(ROC, TRAIN)]
    assert seen_in_training(trained, copy, TRAIN)  # same bytes, other name: still recognised
    assert not seen_in_training(trained, copy, REPORT)  # another split of the same file is clean
    assert seen_in_training([{**data_record(ROC, TRAIN), "split": None}], ROC, REPORT)  # whole file read
    assert not seen_in_training(trained, STS_DEV, REPORT)


def test_a_data_file_trained_under_another_name_counts_as_read_whole(tmp_path):
    # a copy under another folder or name has no rule: training read all of it, report included
    copy = tmp_path / "mine" / "stories.csv"
    copy.parent.mkdir()
    copy.write_bytes(ROC.read_bytes())
    assert len(read_roc_stories(copy, TRAIN)) == len(read_roc_stories(ROC))  # read whole
    trained = [data_record(copy, TRAIN)]
    assert seen_in_training(trained, ROC, REPORT) and seen_in_training(trained, ROC, SELECT)


def test_conll_text_given_to_training_keeps_its_document_split():
    conll = ROC.parents[1] / "conll2003" / "train.txt"
    train, select = read_paragraphs(conll, TRAIN), read_paragraphs(conll, SELECT)
    assert train == [" ".join(s.words) for s in read_conll(conll, split=TRAIN)]  # sentences, not raw columns
    assert select == [" ".join(s.words) for s in read_conll(conll, split=SELECT)] and select[0] not in set(train)


def test_exclude_drops_a_story_or_paragraph_holding_any_held_out_sentence(tmp_path):
    from types import SimpleNamespace

    from magnet.training.corpus import Corpus

    held = ROC.parents[1] / "stsb" / "sts-dev.csv"
    sentence = read_stsb(held)[0][0]
    text = tmp_path / "notes.txt"
    text.write_text(f"Something else happened. {sentence} And then more.\n\nA clean paragraph here.\n")
    built = {}

    def chunk(paragraphs, tokenizer, size):
        built["paragraphs"] = paragraphs
        raise StopIteration  # the filtering is all this test reads

    import magnet.training.corpus as corpus

    config = SimpleNamespace(data=(str(text),), exclude=(str(held),), select_stsb=None, max_length=96)
    original = corpus.chunk_tokens
    corpus.chunk_tokens = chunk
    try:
        with pytest.raises(StopIteration):
            Corpus.build(config, None, None)
    finally:
        corpus.chunk_tokens = original
    assert built["paragraphs"] == ["A clean paragraph here."]
