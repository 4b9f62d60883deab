"""Tagging scores: token accuracy and entity-level F1 (exact span and type).

Entity F1 is micro-averaged over all entity types, as seqeval and conlleval
report it: an entity counts as found only if its first word, last word and
type all match a gold entity.
"""
from __future__ import annotations

from dataclasses import dataclass

from magnet.tagging.iob import decode_entities


@dataclass(frozen=True)
class EntityScores:
    precision: float
    recall: float
    f1: float
    gold: int  # entities in the reference
    predicted: int
    correct: int


def check_aligned(gold: list[list[str]], pred: list[list[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")


def token_accuracy(gold: list[list[str]], pred: list[list[str]]) -> float:
    """Share of words whose predicted tag equals the gold tag."""
    check_aligned(gold, pred)
    total = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    return right / total if total else 0.0


def entity_set(sentences: list[list[str]]) -> set[tuple[int, str, int, int]]:
    """All entities of a corpus as (sentence index, label, start, end)."""
    return {(i, s.label, s.start, s.end) for i, tags in enumerate(sentences) for s in decode_entities(tags)}


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> EntityScores:
    check_aligned(gold, pred)
    gold_set, pred_set = entity_set(gold), entity_set(pred)
    correct = len(gold_set & pred_set)
    precision = correct / len(pred_set) if pred_set else 0.0
    recall = correct / len(gold_set) if gold_set else 0.0
    f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
    return EntityScores(precision, recall, f1, len(gold_set), len(pred_set), correct)


def sentence_counts(entity: bool, gold: list[list[str]], pred: list[list[str]]) -> list[tuple[int, int, int]]:
    """Per sentence, what the corpus score sums: (right, gold, predicted) with accuracy =
    sum right / sum gold (words: gold = predicted = its words) and entity F1 =
    2 sum right / (sum gold + sum predicted) (entities). An interval over sentences resamples
    these (magnet/evaluation/intervals.py)."""
    check_aligned(gold, pred)
    if not entity:
        return [(sum(a == b for a, b in zip(g, p)), len(g), len(g)) for g, p in zip(gold, pred)]
    counts = []
    for g, p in zip(gold, pred):
        gold_set, pred_set = entity_set([g]), entity_set([p])
        counts.append((len(gold_set & pred_set), len(gold_set), len(pred_set)))
    return counts
