"""IOB2 tags -> entity spans (the conlleval / seqeval default reading).

    B-X          starts an X entity
    I-X          continues an open X entity; otherwise starts one (an I- with
                 no B-, or after an entity of another type, is read leniently)
    O, anything  closes the open entity
    without "-"
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    label: str
    start: int  # word indices, end exclusive: words[start:end]
    end: int


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' or a bare tag -> ('O', '')."""
    prefix, sep, label = tag.partition("-")
    if not sep or prefix not in ("B", "I"):
        return "O", ""
    return prefix, label


def decode_entities(tags: list[str]) -> list[Span]:
    """Entity spans of one sentence's IOB2 tags."""
    spans: list[Span] = []
    label, start = "", -1  # the open entity, if start >= 0
    for i, tag in enumerate(tags):
        prefix, tag_label = split_tag(tag)
        continues = prefix == "I" and start >= 0 and tag_label == label
        if continues:
            continue
        if start >= 0:
            spans.append(Span(label, start, i))
            start = -1
        if prefix in ("B", "I"):
            label, start = tag_label, i
    if start >= 0:
        spans.append(Span(label, start, len(tags)))
    return spans
