"""Readers for the text the project trains and evaluates on.

Formats read (by content, not by name):
    plain text    one paragraph per line (WikiText style; ` = Heading = ` lines skipped)
    ROC Stories   CSV with an `InputStoryid` header: a story = sentences 1-4 + the right ending
    MRPC          TSV with a `Quality` header: both strings are text, Quality=1 rows are pairs
"""
from __future__ import annotations

import csv
from pathlib import Path


def read_paragraphs(path: str | Path, holdout_stories: int = 0) -> list[str]:
    path = Path(path)
    head = first_line(path)
    if is_roc_file(path):
        stories = read_roc_stories(path)
        return [" ".join(s) for s in stories[: max(len(stories) - holdout_stories, 0)]]
    if head.startswith("Quality"):
        return [text for a, b, _ in read_mrpc(path) for text in (a, b)]
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if is_paragraph(line)]


def is_paragraph(line: str) -> bool:
    text = line.strip()
    return bool(text) and not (text.startswith("=") and text.endswith("="))


def read_roc_stories(path: str | Path) -> list[list[str]]:
    """Five-sentence stories: sentences 1-4 plus the ending named by AnswerRightEnding."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    stories = []
    for row in rows:
        ending = row[f"RandomFifthSentenceQuiz{row['AnswerRightEnding']}"]
        stories.append([row[f"InputSentence{i}"] for i in range(1, 5)] + [ending])
    return stories


def read_mrpc(path: str | Path) -> list[tuple[str, str, int]]:
    """(sentence 1, sentence 2, quality) rows; the file has a BOM and CRLF line ends."""
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        next(f)
        for line in f:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) >= 5:
                rows.append((parts[3], parts[4], int(parts[0])))
    return rows


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Positive pairs: MRPC paraphrases (Quality=1), or plain `a<TAB>b` lines."""
    path = Path(path)
    if first_line(path).startswith("Quality"):
        return [(a, b) for a, b, q in read_mrpc(path) if q == 1]
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0].strip() and parts[1].strip():
            pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def read_stsb(path: str | Path) -> list[tuple[str, str, float]]:
    """STS-B rows (sentence 1, sentence 2, score 0-5). Tab-split, no CSV quoting:
    sentences contain unbalanced quotes; some rows carry two extra fields."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 7:
            rows.append((parts[5], parts[6], float(parts[4])))
    return rows


def is_roc_file(path: str | Path) -> bool:
    return first_line(Path(path)).startswith("InputStoryid")


def first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig") as f:
        return f.readline()
