"""Read CoNLL-2003 files: one `word POS chunk NER` line per word, blank lines
between sentences, `-DOCSTART-` lines between documents (skipped)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TASKS = ("pos", "chunk", "ner")  # the tag columns after the word, in file order
ENTITY_TASKS = ("chunk", "ner")  # tasks whose tags are IOB2 spans


@dataclass
class Sentence:
    words: list[str]
    tags: dict[str, list[str]] = field(default_factory=dict)  # task -> one tag per word


def parse_line(line: str, path: Path, number: int) -> tuple[str, list[str]]:
    columns = line.split()
    if len(columns) != 1 + len(TASKS):
        raise ValueError(
            f"{path}:{number}: expected {1 + len(TASKS)} columns (word POS chunk NER), got {len(columns)}"
        )
    return columns[0], columns[1:]


def finish(words: list[str], columns: list[list[str]]) -> Sentence:
    tags = {task: [c[k] for c in columns] for k, task in enumerate(TASKS)}
    return Sentence(words, tags)


def read_conll(path: str | Path, max_sentences: int | None = None, split: str | None = None) -> list[Sentence]:
    """The first `max_sentences` sentences of a CoNLL-2003 file (all if None), of the documents
    in `split` (magnet.splits; None: every document). A document's key is its number in the file."""
    from magnet.splits import keep

    path = Path(path)
    sentences: list[Sentence] = []
    words: list[str] = []
    columns: list[list[str]] = []
    document = 0
    kept = keep(path, "0", split)
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if max_sentences is not None and len(sentences) >= max_sentences:
                break
            line = line.strip()
            if line.startswith("-DOCSTART-"):
                document += 1
                kept = keep(path, str(document), split)
                continue
            if not line:
                if words and kept:
                    sentences.append(finish(words, columns))
                words, columns = [], []
                continue
            word, tags = parse_line(line, path, number)
            words.append(word)
            columns.append(tags)
    if words and kept and (max_sentences is None or len(sentences) < max_sentences):
        sentences.append(finish(words, columns))
    return sentences
