"""STS-B Spearman and ROC infill perplexity, and their `magnet eval` commands."""
from __future__ import annotations

import math

import pytest
import torch

from magnet.evaluation.infill import (
    READINGS,
    infill_controls,
    infill_perplexity,
    reading_perplexity,
    span_nll,
    story_tokens,
)
from magnet.evaluation.intervals import (
    corpus_score,
    mean_interval,
    perplexity_ratio_interval,
    ratio_of_means_interval,
    score_difference_interval,
)
from magnet.evaluation.sts import average_ranks, spearman, stsb_interval
from magnet.masks import AttentionMode
from magnet.tagging.metrics import entity_scores, sentence_counts, token_accuracy

STORY = ["Tom was hungry.", "He went to the store.", "He bought a sandwich.", "He ate it.", "He was full."]


def test_spearman_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    x = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0, 4.0, 4.0])
    y = torch.tensor([0.5, 1.0, 3.0, 2.0, 6.0, 5.0, 5.5])
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-9)
    assert spearman(x, x) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)


def test_infill_scores_the_same_tokens_in_both_modes_and_context_after_matters(tiny_engine):
    before, missing, after = story_tokens(tiny_engine.tokenizer, STORY)
    model, anchor, eos = tiny_engine.model, tiny_engine.anchor_id, tiny_engine.tokenizer.eos_token_id
    hybrid, n_hybrid = span_nll(model, anchor, eos, before, missing, after, hybrid=True)
    causal, n_causal = span_nll(model, anchor, eos, before, missing, after, hybrid=False)
    assert n_hybrid == n_causal == len(missing) > 0
    other_after = story_tokens(tiny_engine.tokenizer, STORY[:3] + ["Dogs bark.", "Cats sleep."])[2]
    assert span_nll(model, anchor, eos, before, missing, other_after, hybrid=True)[0] != pytest.approx(hybrid)
    assert span_nll(model, anchor, eos, before, missing, other_after, hybrid=False)[0] == pytest.approx(causal)
    ppl = infill_perplexity(model, tiny_engine.tokenizer, anchor, [STORY], hybrid=True)
    assert ppl == pytest.approx(math.exp(hybrid / n_hybrid), rel=1e-5)


OTHER = ["Ana was cold.", "She found a coat.", "She put it on.", "The wind stopped.", "She was warm."]


def test_readings_score_one_story_each_way_and_the_wrong_suffix_is_the_next_storys(tiny_engine):
    model, anchor, eos = tiny_engine.model, tiny_engine.anchor_id, tiny_engine.tokenizer.eos_token_id
    (b1, m1, a1), (b2, m2, a2) = story_tokens(tiny_engine.tokenizer, STORY), story_tokens(tiny_engine.tokenizer, OTHER)
    ppl = {reading: reading_perplexity(tiny_engine, [STORY, OTHER], reading) for reading in READINGS}
    n = len(m1) + len(m2)
    expect = lambda a, b, **kw: math.exp((span_nll(model, anchor, eos, b1, m1, a, **kw)[0]  # noqa: E731
                                          + span_nll(model, anchor, eos, b2, m2, b, **kw)[0]) / n)
    assert ppl["causal"] == pytest.approx(expect(a1, a2, hybrid=False), rel=1e-5)
    assert ppl["hybrid"] == pytest.approx(expect(a1, a2, hybrid=True), rel=1e-5)
    assert ppl["wrong_suffix"] == pytest.approx(expect(a2, a1, hybrid=True), rel=1e-5)  # each the other's ending
    assert ppl["no_suffix"] == pytest.approx(expect([], [], hybrid=True), rel=1e-5)  # the text ends at the gap
    assert len(set(round(v, 6) for v in ppl.values())) == 4  # four different readings


def test_perplexity_ratio_interval_brackets_the_ratio_and_narrows_with_more_stories():
    """Per-story NLLs of two readings of the same tokens: the interval holds the pooled ratio,
    is a point where every story agrees, and shrinks as the same spread covers 4x the stories."""
    gen = torch.Generator().manual_seed(1)
    counts = torch.randint(5, 15, (60,), generator=gen).tolist()
    under = [3.0 * n for n in counts]  # 3 nats a token, left to right
    over = [u + float(torch.randn(1, generator=gen)) * 4 - 0.2 * n for u, n in zip(under, counts)]
    ratio = math.exp((sum(over) - sum(under)) / sum(counts))
    low, high = perplexity_ratio_interval(over, under, counts)
    assert low < ratio < high and high - low > 0.01
    assert perplexity_ratio_interval(over, under, counts) == (low, high)  # a fixed seed: the same interval every run
    wide_low, wide_high = perplexity_ratio_interval(over * 4, under * 4, counts * 4)
    assert wide_low < ratio < wide_high and wide_high - wide_low < 0.7 * (high - low)
    assert perplexity_ratio_interval(under, under, counts) == pytest.approx((1.0, 1.0))


def test_average_ranks_share_ties_like_scipy():
    values = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 1.0, 1.0])
    assert average_ranks(values).tolist() == [5.0, 1.0, 3.5, 3.5, 6.0, 1.0, 1.0]  # scipy rankdata - 1


def test_mean_and_ratio_intervals_hold_their_figure_and_a_hit_rate_stays_in_0_1():
    hits = [1.0] * 7 + [0.0] * 39  # 7 of 46 cloze items
    low, high = mean_interval(hits)
    assert 0.0 <= low < 7 / 46 < high <= 1.0 and high - low > 0.1  # 46 items: a wide interval
    assert mean_interval([1.0] * 46) == pytest.approx((1.0, 1.0))
    base = [0.2, 0.1, 0.4, 0.3, 0.0, 0.25, 0.35, 0.15]
    adapted = [b * 1.5 + 0.01 * i for i, b in enumerate(base)]
    low, high = ratio_of_means_interval(adapted, base)
    assert low < sum(adapted) / sum(base) < high


def test_sentence_counts_sum_to_the_corpus_scores_and_their_difference_has_an_interval():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"], ["B-MISC", "O"]] * 5
    good = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"], ["O", "O"]] * 5
    poor = [["B-PER", "O", "O", "B-LOC"], ["O", "O", "O"], ["B-MISC", "O"]] * 5
    for entity, reference in ((True, lambda g, p: entity_scores(g, p).f1), (False, token_accuracy)):
        for pred in (good, poor):
            sums = torch.tensor(sentence_counts(entity, gold, pred), dtype=torch.float64).sum(dim=0)
            assert float(corpus_score(sums, entity)) == pytest.approx(reference(gold, pred))
    counts = {name: sentence_counts(True, gold, pred) for name, pred in (("good", good), ("poor", poor))}
    low, high = score_difference_interval(counts["good"], counts["poor"], entity=True)
    difference = entity_scores(gold, good).f1 - entity_scores(gold, poor).f1
    assert low <= difference <= high and low < high
    assert score_difference_interval(counts["good"], counts["good"], entity=True) == pytest.approx((0.0, 0.0))


def test_stsb_interval_brackets_the_spearman_of_the_pairs():
    gen = torch.Generator().manual_seed(0)
    gold = torch.randint(0, 6, (200,), generator=gen).float()
    cosines = gold + torch.randn(200, generator=gen) * 2
    rows = [("a", "b", float(g)) for g in gold]
    low, high = stsb_interval(cosines, rows)
    assert low < 100 * spearman(cosines, gold) < high and high - low < 25


def test_infill_controls_give_each_ratio_an_interval_around_it(tiny_engine):
    result = infill_controls(tiny_engine, None, [STORY, OTHER, STORY[:2] + OTHER[2:]])
    for (over, under), key in (("hybrid", "adapted_causal"), "hybrid_causal_interval"), \
            (("wrong_suffix", "adapted_hybrid"), "wrong_hybrid_interval"):
        low, high = result[key]
        assert low <= result[f"adapted_{over}"] / result[under] <= high


def test_under_causal_gap_the_suffix_reaches_the_first_missing_token(tiny_engine):
    """The first missing token's NLL: under LEFT_CONTEXT it is read from the text before the
    gap alone; under LEFT_CONTEXT_GAP its predictor reads the text after the gap too."""
    model, anchor, eos = tiny_engine.model, tiny_engine.anchor_id, tiny_engine.tokenizer.eos_token_id
    before, missing, after = story_tokens(tiny_engine.tokenizer, STORY)
    other_after = story_tokens(tiny_engine.tokenizer, OTHER)[2]
    first = lambda suffix, mode: span_nll(model, anchor, eos, before, missing[:1], suffix,  # noqa: E731
                                          hybrid=True, context=mode)[0]
    assert first(after, AttentionMode.LEFT_CONTEXT) == pytest.approx(first(other_after, AttentionMode.LEFT_CONTEXT),
                                                                     abs=1e-5)
    assert abs(first(after, AttentionMode.LEFT_CONTEXT_GAP) - first(other_after, AttentionMode.LEFT_CONTEXT_GAP)) > 1e-4


def test_the_fill_reads_its_context_as_the_engine_does(tiny_engine, monkeypatch):
    """The readings follow `Engine.infill_context` (what /v1/infill prefills with): an adapter
    trained with a left-to-right context is scored with its context read left to right."""
    model, anchor, eos = tiny_engine.model, tiny_engine.anchor_id, tiny_engine.tokenizer.eos_token_id
    before, missing, after = story_tokens(tiny_engine.tokenizer, STORY)
    bidirectional = reading_perplexity(tiny_engine, [STORY, OTHER], "hybrid")
    monkeypatch.setattr(tiny_engine, "infill_context", AttentionMode.LEFT_CONTEXT)
    left = reading_perplexity(tiny_engine, [STORY], "hybrid")
    nll, n = span_nll(model, anchor, eos, before, missing, after, hybrid=True, context=AttentionMode.LEFT_CONTEXT)
    assert left == pytest.approx(math.exp(nll / n), rel=1e-6)
    assert abs(reading_perplexity(tiny_engine, [STORY, OTHER], "hybrid") - bidirectional) > 1e-2


def test_eval_commands_run_on_a_local_model(tiny_model_dir, tmp_path, capsys):
    from magnet.cli import main

    sts = tmp_path / "sts.csv"
    rows = [("A man plays.", "A man is playing.", 4.5), ("A dog runs.", "Stocks fell.", 0.2),
            ("Kids swim.", "Children are swimming.", 4.0)]
    sts.write_text("".join(f"main\tx\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(rows)))
    assert main(["eval", "sts", "--data", str(sts), "--model", str(tiny_model_dir), "--adapter", "none"]) == 0
    assert "STS-B Spearman" in capsys.readouterr().out
    roc = tmp_path / "roc.csv"
    header = "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4," \
             "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
    roc.write_text(header + "id1," + ",".join(STORY[:4]) + f",{STORY[4]},Nope.,1\n"
                   + "id2," + ",".join(OTHER[:4]) + f",{OTHER[4]},Nope.,1\n")
    assert main(["eval", "infill", "--data", str(roc), "--stories", "1", "--model", str(tiny_model_dir),
                 "--adapter", "none", "--causal"]) == 0
    assert "ROC infill PPL (causal)" in capsys.readouterr().out
    assert main(["eval", "infill", "--data", str(roc), "--model", str(tiny_model_dir), "--adapter", "none"]) == 0
    printed = capsys.readouterr().out
    assert "on 2 stories" in printed and "roc.csv, whole file (no split rule)" in printed
    for reading in READINGS:
        assert f"  {reading} " in printed


def test_eval_cloze_scores_the_items_of_the_split_asked(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from magnet.cli import main

    monkeypatch.setenv("MAGNET_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["eval", "cloze", "--model", str(tiny_model_dir), "--adapter", "none", "--max-tokens", "2"]
    assert main(argv + ["--split", "select"]) == 0
    printed = capsys.readouterr().out
    assert "on 46 items (cloze_items_select.json)" in printed
    assert "on the 23 items of a closed kind (days, months, counts, arithmetic, alphabet)" in printed
    assert main(argv) == 0  # report by default
    assert "on 46 items (cloze_items.json)" in capsys.readouterr().out


def test_every_closed_kind_cloze_item_has_an_answer_among_its_kinds_choices():
    from magnet.evaluation.cloze import CHOICES, ITEMS_FILES, first_word, load_items

    for path in ITEMS_FILES.values():
        items = load_items(path)
        closed = [item for item in items if item.kind in CHOICES]
        assert len(closed) == 23, path.name
        for item in closed:
            assert {first_word(word) for word in CHOICES[item.kind]} & set(item.answers), item.text


class ScoringEngine:
    """causal_logprobs that likes the texts holding `liked`: the `known` reader's only call."""

    def __init__(self, liked: str):
        self.liked = liked
        self.texts: list[str] = []

    def causal_logprobs(self, texts):
        self.texts += texts
        return [0.0 if self.liked in text else -5.0 for text in texts]


def test_known_reader_picks_the_likeliest_word_of_the_items_kind():
    from magnet.evaluation.cloze import ClozeItem, closed_items, known_hits, known_word

    day = ClozeItem("Today is ___, so tomorrow will be Saturday.", ("friday",), "days")
    letter = ClozeItem("The letter ___ comes right after A.", ("b",), "alphabet")
    thing = ClozeItem("The ___ chirped in the tree.", ("bird",), "things")
    engine = ScoringEngine("Friday")
    assert known_word(engine, day) == "Friday"
    assert "Today is Monday, so tomorrow will be Saturday." in engine.texts and len(engine.texts) == 7
    assert closed_items([day, thing, letter]) == [day, letter]
    assert known_hits(engine, [day, letter]) == [True, False]  # no letter text holds "Friday": the first, A
    assert known_word(ScoringEngine("letter B "), letter) == "B"
