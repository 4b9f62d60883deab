"""Split raw text into CoNLL-like words, keeping each word's character span.

CoNLL-2003 (Penn Treebank style) keeps punctuation apart from words, splits
clitics ("John 's", "do n't") and keeps dotted abbreviations ("U.S.") and
numbers ("1996-08-22", "3.5") whole. The heads were trained on such words, so
raw input is split the same way; the spans let tags map back to the input.

Word characters are Unicode's, combining marks included (the `regex` module's `\w`; the
standard `re` leaves marks out, which cut "Mu\u0308ller" as typed on some systems, and every
Indic or Thai word, into pieces), and the apostrophe is either ' or ’.
"""
from __future__ import annotations

from dataclasses import dataclass

import regex

# Order matters: the first alternative that matches at a position wins.
WORD_PATTERN = regex.compile(
    r"""
    (?:[A-Za-z]\.){2,}                 # dotted abbreviations: U.S. , e.g.
    | \d+(?:[.,:/-]\d+)*               # numbers, dates, times: 1,000  3.5  1996-08-22
    | \w+(?=n['’]t\b)                  # "do" of "don't" ...
    | n['’]t\b                         # ... and its "n't"
    | ['’](?:s|re|ve|ll|d|m)\b         # clitics: 's 're 've 'll 'd 'm
    | \w+(?:-\w+|['’](?!(?:s|re|ve|ll|d|m)\b)\w+)*   # words: Jean-Marie, O'Neill (not John|'s)
    | [^\w\s]                          # any other single symbol
    """,
    regex.VERBOSE | regex.IGNORECASE | regex.VERSION0,
)


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # character offsets into the input: input[start:end] == text
    end: int


def split_words(text: str) -> list[Word]:
    """CoNLL-like words of `text`, each with its character span."""
    return [Word(m.group(), m.start(), m.end()) for m in WORD_PATTERN.finditer(text)]


def join_words(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Pre-split words -> (the words joined by single spaces, each word's span in it)."""
    spans, start = [], 0
    for word in words:
        spans.append((start, start + len(word)))
        start += len(word) + 1
    return " ".join(words), spans
