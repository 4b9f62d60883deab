"""The tagger: NER / POS / chunk tags for raw texts or pre-split words.

    tagger = Tagger.load(engine)                      # the shipped default heads
    tagger.tag(["Peter lives in Brussels."], task="ner")
    -> [{"words": ["Peter", "lives", "in", "Brussels", "."],
         "tags": ["B-PER", "O", "O", "B-LOC", "O"],
         "entities": [{"text": "Peter", "label": "PER", "start": 0, "end": 5}, ...]}]
    items = tagger.prepare(texts=[...])               # tokenized once (the server: off the event loop)
    tagger.tag_items(items, task="pos")               # the model's part: what `tag` does after prepare

Entity start/end are character offsets into the input text (input[start:end]
== text), or word indices (words[start:end]) when words were given.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from magnet.engine import WordInput
from magnet.errors import InvalidInputError, UnknownTaskError
from magnet.tagging.conll import ENTITY_TASKS
from magnet.tagging.features import engine_identity
from magnet.tagging.heads import DEFAULT_HEADS_DIR, HeadsManifest, HeadsMismatchError, TagHead, describe, load_heads
from magnet.tagging.iob import Span, decode_entities
from magnet.tagging.words import Word, join_words, split_words


@dataclass(frozen=True)
class TagItem:
    """One input prepared for tagging: split into words and tokenized once."""

    text: str  # what the model reads (pre-split words are joined by single spaces)
    words: list[str]
    spans: list[tuple[int, int]]  # each word's characters in `text`
    from_text: bool  # entity start/end: characters of `text` (True) or word indices (False)
    tokens: WordInput  # [anchor] + the text's tokens, with their characters

    @property
    def n_tokens(self) -> int:
        return len(self.tokens.ids)


class Tagger:
    def __init__(self, engine, heads: dict[str, TagHead], manifest: HeadsManifest):
        self.engine = engine
        self.heads = heads
        self.manifest = manifest

    @classmethod
    def load(cls, engine, heads_dir: str | Path = DEFAULT_HEADS_DIR) -> "Tagger":
        """Heads from `heads_dir`, refused unless trained on the engine's base model and adapter."""
        heads, manifest = load_heads(Path(heads_dir))
        model = engine_identity(engine)
        problems = manifest.mismatch(model.base, model.adapter)
        if manifest.feature_layer is not None and not engine.has_layer(manifest.feature_layer):
            problems.append(f"they read layer {manifest.feature_layer} of a model with {engine.n_layers}")
        if problems:
            raise HeadsMismatchError(
                f"tagging heads in {heads_dir} were trained on {describe(manifest.base, manifest.adapter)}, "
                f"but the model is {describe(model.base, model.adapter)} ({'; '.join(problems)})"
            )
        return cls(engine, heads, manifest)

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def head(self, task: str) -> TagHead:
        if task not in self.heads:
            raise UnknownTaskError(f"unknown task {task!r}: the loaded tagging tasks are {', '.join(self.tasks)}")
        return self.heads[task]

    def predict(self, vectors: list[torch.Tensor], task: str) -> list[list[str]]:
        head = self.head(task)
        return [head.predict(v) for v in vectors]

    def prepare(self, texts: list[str] | None = None, words: list[list[str]] | None = None) -> list[TagItem]:
        """Each text or pre-split word list split, checked and tokenized: what `tag_items` reads."""
        texts_in, spans, word_lists, char_spans = prepare_inputs(texts, words)
        tokens = self.engine.word_inputs(texts_in, hint="split it into sentences")
        return [TagItem(text, ws, sp, chars is not None, tok)
                for text, ws, sp, chars, tok in zip(texts_in, word_lists, spans, char_spans, tokens)]

    def tag_items(self, items: list[TagItem], task: str) -> list[dict]:
        """Tags (and entities, for ner and chunk) of prepared items."""
        self.head(task)  # fail on an unknown task before any model work
        vectors = self.engine.word_vectors([item.tokens for item in items], [item.spans for item in items],
                                           self.manifest.feature_mode, self.manifest.feature_layer)
        return [result(item, tags, task in ENTITY_TASKS) for item, tags in zip(items, self.predict(vectors, task))]

    def tag(self, texts: list[str] | None = None, words: list[list[str]] | None = None,
            task: str = "ner") -> list[dict]:
        """Tags (and entities, for ner and chunk) of each text or pre-split word list."""
        self.head(task)  # before the tokenizer's work
        return self.tag_items(self.prepare(texts, words), task)


def prepare_inputs(texts: list[str] | None, words: list[list[str]] | None):
    """-> (texts to encode, word char spans in them, word lists, spans to report or None per item)."""
    if (texts is None) == (words is None):
        raise InvalidInputError("give either texts or words (pre-split), not both and not neither")
    if not (texts or words):
        raise InvalidInputError("nothing to tag: send at least one text")
    if texts is not None:
        split = [split_text(text, i) for i, text in enumerate(texts)]
        spans = [[(w.start, w.end) for w in ws] for ws in split]
        return list(texts), spans, [[w.text for w in ws] for ws in split], spans
    word_lists = [check_words(ws, i) for i, ws in enumerate(words)]
    joined, spans = zip(*(join_words(ws) for ws in word_lists))
    return list(joined), list(spans), word_lists, [None] * len(word_lists)


def split_text(text: str, index: int) -> list[Word]:
    if not isinstance(text, str):
        raise InvalidInputError(f"input {index} is not a string")
    found = split_words(text)
    if not found:
        raise InvalidInputError(f"input {index} has no words to tag: send non-empty text")
    return found


def check_words(words: list[str], index: int) -> list[str]:
    if not words:
        raise InvalidInputError(f"words[{index}] is empty: send at least one word")
    for k, word in enumerate(words):
        if not isinstance(word, str) or not word.strip():
            raise InvalidInputError(f"words[{index}][{k}] is empty: every word needs a non-space character")
    return list(words)


def result(item: TagItem, tags: list[str], with_entities: bool) -> dict:
    out = {"words": item.words, "tags": tags}
    if with_entities:
        out["entities"] = [entity(span, item) for span in decode_entities(tags)]
    return out


def entity(span: Span, item: TagItem) -> dict:
    if not item.from_text:  # pre-split words: word indices
        return {"text": " ".join(item.words[span.start:span.end]), "label": span.label,
                "start": span.start, "end": span.end}
    start, end = item.spans[span.start][0], item.spans[span.end - 1][1]
    return {"text": item.text[start:end], "label": span.label, "start": start, "end": end}
