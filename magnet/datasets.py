"""Readers for the text the project trains and evaluates on.

Formats read (by content, not by name):
    plain text    one paragraph per line (WikiText style; ` = Heading = ` lines skipped,
                  WikiText's tokenized spacing ` @-@ `, ` , `, ` .` undone: see detokenize_wikitext)
    ROC Stories   CSV with an `InputStoryid` header: a story = sentences 1-4 + the right ending
    MRPC          TSV with a `Quality` header: both strings are text, Quality=1 rows are pairs
    STS-B         TSV rows of genre, file, year, id, score, sentence 1, sentence 2 (no header):
                  both sentences are text; as pairs, rows scored >= STSB_PAIR_SCORE are positives
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from magnet.splits import TRAIN, USER_TEXT, keep, rule_for

# WikiText's tokenization, undone so a model trained on it does not learn to write " ." or " @-@ ".
WIKITEXT_MARKERS = (" @-@ ", " @,@ ", " @.@ ")
WIKITEXT_FIXES = [
    (re.compile(r" @([-,.])@ "), r"\1"),  # 1 @,@ 000 -> 1,000 ; well @-@ known -> well-known
    (re.compile(r" ([.,;:!?%)\]}])"), r"\1"),  # word . -> word.
    (re.compile(r"([(\[{$]) "), r"\1"),  # ( word -> (word
    (re.compile(r" (n't|'s|'re|'ve|'m|'ll|'d)\b"), r"\1"),  # did n't -> didn't ; John 's -> John's
    (re.compile(r'" ([^"]*?) "'), r'"\1"'),  # " quoted " -> "quoted"
    (re.compile(r" {2,}"), " "),
]


def detokenize_wikitext(text: str) -> str:
    """`The film , released in 1 @,@ 000 cinemas ( mostly ) , was well @-@ received .`
    -> `The film, released in 1,000 cinemas (mostly), was well-received.`"""
    for pattern, replacement in WIKITEXT_FIXES:
        text = pattern.sub(replacement, text)
    return text.strip()


def looks_like_wikitext(lines: list[str]) -> bool:
    return any(marker in line for line in lines[:2000] for marker in WIKITEXT_MARKERS)


def normalized(text: str) -> str:
    """The form two sentences are compared in when checking for evaluation overlap."""
    return " ".join(re.sub(r"[^\w ]", " ", text.lower()).split())


def evaluation_sentences(path: str | Path, split: str | None = None) -> set[str]:
    """Every sentence of an evaluation file (STS-B, ROC CSV, MRPC, CoNLL or plain text), normalized;
    of one split of it, or of the whole file (None)."""
    path = Path(path)
    if is_conll_file(path):
        from magnet.tagging.conll import read_conll

        texts = [" ".join(s.words) for s in read_conll(path, split=split)]
    elif is_stsb_line(first_line(path)):
        texts = [t for a, b, _ in read_stsb(path, split) for t in (a, b)]
    elif is_roc_file(path):
        texts = [t for story in read_roc_stories(path, split) for t in story]
    else:
        texts = read_paragraphs(path, split)
    return {normalized(t) for t in texts} - {""}


def read_paragraphs(path: str | Path, split: str | None = None) -> list[str]:
    """The file's text, one paragraph (or ROC story, or sentence) per item; of one split of its
    documents (magnet.splits), or all of it (None)."""
    path = Path(path)
    head = first_line(path)
    if is_conll_file(path):  # one sentence of words per item, of its documents' split
        from magnet.tagging.conll import read_conll

        return [" ".join(s.words) for s in read_conll(path, split=split)]
    if is_roc_file(path):
        return [" ".join(s) for s in read_roc_stories(path, split)]
    if head.startswith("Quality"):
        return [text for a, b, _ in read_mrpc(path, split) for text in (a, b)]
    if is_stsb_line(head):  # each sentence once (many pairs share one)
        return list(dict.fromkeys(text for a, b, _ in read_stsb(path, split) for text in (a, b)))
    if rule_for(path) is USER_TEXT:  # the user's own text: all of it is train
        return [p for _, paragraphs in read_articles(path) for p in paragraphs] if split in (None, TRAIN) else []
    articles = read_articles(path)
    return [p for title, paragraphs in articles if keep(path, title, split) for p in paragraphs]


def read_articles(path: str | Path) -> list[tuple[str, list[str]]]:
    """(title, paragraphs) of each article: WikiText's ` = Title = ` lines start one (` = = Section
    = = ` do not); a file without such headings is one article titled "". Spacing undone."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    wikitext = looks_like_wikitext(lines)
    articles: list[tuple[str, list[str]]] = [("", [])]
    for line in lines:
        title = article_title(line)
        if title is not None:
            articles.append((title, []))
        elif is_paragraph(line):
            text = line.strip()
            articles[-1][1].append(detokenize_wikitext(text) if wikitext else text)
    return [(title, paragraphs) for title, paragraphs in articles if paragraphs]


def article_title(line: str) -> str | None:
    """`Homarus gammarus` for ` = Homarus gammarus = `; None for section headings and text."""
    match = re.fullmatch(r"\s*= ([^=].*?) =\s*", line)
    return match.group(1).strip() if match else None


def is_paragraph(line: str) -> bool:
    text = line.strip()
    return bool(text) and not (text.startswith("=") and text.endswith("="))


def read_roc_stories(path: str | Path, split: str | None = None) -> list[list[str]]:
    """Five-sentence stories: sentences 1-4 plus the ending named by AnswerRightEnding."""
    return [story for story, _ in read_roc_quiz(path, split)]


def read_roc_quiz(path: str | Path, split: str | None = None) -> list[tuple[list[str], str]]:
    """(story, wrong ending) of each story of `split`: the other quiz ending is a ready-made negative."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = [row for row in csv.DictReader(f) if keep(path, row["InputStoryid"], split)]
    stories = []
    for row in rows:
        wrong = row[f"RandomFifthSentenceQuiz{3 - int(row['AnswerRightEnding'])}"]
        ending = row[f"RandomFifthSentenceQuiz{row['AnswerRightEnding']}"]
        stories.append(([row[f"InputSentence{i}"] for i in range(1, 5)] + [ending], wrong))
    return stories


def read_mrpc(path: str | Path, split: str | None = None) -> list[tuple[str, str, int]]:
    """(sentence 1, sentence 2, quality) rows; the file has a BOM and CRLF line ends."""
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        next(f)
        for line in f:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) >= 5 and keep(path, f"{parts[1]}/{parts[2]}", split):
                rows.append((parts[3], parts[4], int(parts[0])))
    return rows


# STS-B's 4: "mostly equivalent, but some unimportant details differ"; 5: "completely equivalent".
STSB_PAIR_SCORE = 4.0


def read_pairs(path: str | Path, split: str | None = None) -> list[tuple[str, str]]:
    """Positive pairs: MRPC paraphrases (Quality=1), STS-B rows scored >= STSB_PAIR_SCORE,
    or plain `a<TAB>b` lines (all train)."""
    path = Path(path)
    head = first_line(path)
    if head.startswith("Quality"):
        return [(a, b) for a, b, q in read_mrpc(path, split) if q == 1]
    if is_stsb_line(head):
        return [(a, b) for a, b, score in read_stsb(path, split) if score >= STSB_PAIR_SCORE]
    if split not in (None, TRAIN):
        return []
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0].strip() and parts[1].strip():
            pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def read_stsb(path: str | Path, split: str | None = None) -> list[tuple[str, str, float]]:
    """STS-B rows (sentence 1, sentence 2, score 0-5). Tab-split, no CSV quoting:
    sentences contain unbalanced quotes; some rows carry two extra fields.

    A pair is a document (keyed by genre/file/year/id). Many sentences recur in several pairs,
    so the train split also drops every pair sharing a sentence with a pair of another split."""
    rows, others = [], set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 7:
            continue
        if keep(path, "/".join(parts[:4]), split):
            rows.append((parts[5], parts[6], float(parts[4])))
        elif split == TRAIN:
            others |= {normalized(parts[5]), normalized(parts[6])}
    return [row for row in rows if not others & {normalized(row[0]), normalized(row[1])}]


def is_stsb_line(line: str) -> bool:
    """An STS-B row: genre, file, year, id, score, sentence 1, sentence 2 (tab-separated)."""
    return line.count("\t") >= 6


def is_conll_file(path: str | Path) -> bool:
    """CoNLL-2003: `-DOCSTART-` lines start its documents (word POS chunk NER per line)."""
    return Path(path).suffix == ".txt" and first_line(Path(path)).startswith("-DOCSTART-")


def sentences_of(paragraph: str) -> list[str]:
    """A paragraph's sentences, cut after . ! ? and a space (enough to match held-out ones)."""
    return re.split(r"(?<=[.!?])\s+", paragraph.strip())


def is_roc_file(path: str | Path) -> bool:
    return first_line(Path(path)).startswith("InputStoryid")


def first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig") as f:
        return f.readline()
