"""Word splitting, IOB2 decoding, metrics and the CoNLL reader (no model)."""
from __future__ import annotations

import pytest

from magnet.tagging.conll import read_conll
from magnet.tagging.iob import Span, decode_entities
from magnet.tagging.metrics import entity_scores, token_accuracy
from magnet.tagging.words import join_words, split_words


@pytest.mark.parametrize("text, words", [
    ("EU rejects German call to boycott British lamb.",
     ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]),
    ("I don't think John's trip cost $3.5 (or 1,000)!",
     ["I", "do", "n't", "think", "John", "'s", "trip", "cost", "$", "3.5", "(", "or", "1,000", ")", "!"]),
    ("The U.S. team met on 1996-08-22 in Jean-Marie's town.",
     ["The", "U.S.", "team", "met", "on", "1996-08-22", "in", "Jean-Marie", "'s", "town", "."]),
    ("  Zürich,\tO'Neill\n", ["Zürich", ",", "O'Neill"]),
    # combining marks belong to their word (decomposed Latin, Devanagari), and ’ is an apostrophe
    ("Jose\u0301 Mu\u0308ller visited Ko\u0308ln.", ["Jose\u0301", "Mu\u0308ller", "visited", "Ko\u0308ln", "."]),
    ("नरेंद्र मोदी दिल्ली में रहते हैं", ["नरेंद्र", "मोदी", "दिल्ली", "में", "रहते", "हैं"]),
    ("John’s dog didn’t bark, O’Neill said.",
     ["John", "’s", "dog", "did", "n’t", "bark", ",", "O’Neill", "said", "."]),
])
def test_split_words_is_conll_like(text, words):
    assert [w.text for w in split_words(text)] == words


def test_word_offsets_map_back_to_the_input():
    text = "  Peter Blackburn (EU) said:\n\"no\" — at 10:30 in São Paulo's centre.  "
    found = split_words(text)
    assert found, "no words found"
    for w in found:
        assert text[w.start:w.end] == w.text
    # words are in order, do not overlap, and only whitespace is left out
    assert all(a.end <= b.start for a, b in zip(found, found[1:]))
    covered = {i for w in found for i in range(w.start, w.end)}
    assert all(text[i].isspace() for i in range(len(text)) if i not in covered)


def test_join_words_gives_spans_into_the_joined_text():
    text, spans = join_words(["New", "York", "."])
    assert text == "New York ."
    assert [text[s:e] for s, e in spans] == ["New", "York", "."]


@pytest.mark.parametrize("tags, spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], [Span("PER", 0, 2), Span("LOC", 3, 4)]),
    (["I-PER", "I-PER", "O"], [Span("PER", 0, 2)]),  # I- without B- starts an entity
    (["O", "I-ORG"], [Span("ORG", 1, 2)]),
    (["B-PER", "I-LOC", "I-LOC"], [Span("PER", 0, 1), Span("LOC", 1, 3)]),  # type change
    (["B-PER", "B-PER", "I-PER"], [Span("PER", 0, 1), Span("PER", 1, 3)]),  # B- after B- splits
    (["B-NP", "I-NP", "B-VP", "O", "B-PP"], [Span("NP", 0, 2), Span("VP", 2, 3), Span("PP", 4, 5)]),
    (["O", "O"], []),
    ([], []),
    (["B-MISC", "I-MISC"], [Span("MISC", 0, 2)]),  # an entity ending the sentence
])
def test_decode_entities(tags, spans):
    assert decode_entities(tags) == spans


def test_entity_scores_exact_span_and_type():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"],  # PER too short (wrong), LOC right
            ["B-LOC", "O"]]  # right span, wrong type
    s = entity_scores(gold, pred)
    assert (s.gold, s.predicted, s.correct) == (3, 3, 1)
    assert s.precision == pytest.approx(1 / 3) and s.recall == pytest.approx(1 / 3)
    assert s.f1 == pytest.approx(1 / 3)


def test_entity_scores_precision_and_recall_differ():
    gold = [["B-PER", "O", "B-LOC", "O"]]
    pred = [["B-PER", "O", "O", "O"]]
    s = entity_scores(gold, pred)
    assert (s.precision, s.recall) == (1.0, 0.5)
    assert s.f1 == pytest.approx(2 / 3)
    assert entity_scores(gold, gold).f1 == 1.0
    assert entity_scores([["O"]], [["O"]]).f1 == 0.0  # nothing to find, nothing found


def test_token_accuracy_and_alignment_checks():
    assert token_accuracy([["NN", "VB"], ["DT"]], [["NN", "NN"], ["DT"]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="sentence 0"):
        token_accuracy([["NN", "VB"]], [["NN"]])
    with pytest.raises(ValueError, match="1 gold sentences but 2"):
        entity_scores([["O"]], [["O"], ["O"]])


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def test_read_conll(tmp_path):
    path = tmp_path / "sample.txt"
    path.write_text(CONLL)
    sentences = read_conll(path)
    assert [s.words for s in sentences] == [["EU", "rejects", "."], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert sentences[1].tags == {"pos": ["NNP", "NNP"], "chunk": ["B-NP", "I-NP"], "ner": ["B-PER", "I-PER"]}
    assert [s.words for s in read_conll(path, max_sentences=2)] == [["EU", "rejects", "."], ["Peter", "Blackburn"]]


def test_read_conll_names_a_bad_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("EU NNP B-NP\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected 4 columns"):
        read_conll(path)
