"""The tagger: NER / POS / chunk tags for raw texts or pre-split words.

    tagger = Tagger.load(engine)                      # the shipped default heads
    tagger.tag(["Peter lives in Brussels."], task="ner")
    -> [{"words": ["Peter", "lives", "in", "Brussels", "."],
         "tags": ["B-PER", "O", "O", "B-LOC", "O"],
         "entities": [{"text": "Peter", "label": "PER", "start": 0, "end": 5}, ...]}]

Entity start/end are character offsets into the input text (input[start:end]
== text), or word indices (words[start:end]) when words were given.
"""
from __future__ import annotations

from pathlib import Path

import torch

from magnet.errors import InvalidInputError, UnknownTaskError
from magnet.tagging.conll import ENTITY_TASKS
from magnet.tagging.features import engine_identity, states_function
from magnet.tagging.heads import DEFAULT_HEADS_DIR, HeadsManifest, HeadsMismatchError, TagHead, describe, load_heads
from magnet.tagging.iob import Span, decode_entities
from magnet.tagging.words import Word, join_words, split_words


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

    def word_vectors(self, texts: list[str], spans: list[list[tuple[int, int]]]) -> list[torch.Tensor]:
        """(n_words, H) per text, in the feature mode the heads were trained on."""
        return states_function(self.engine, self.manifest.feature_mode)(texts, spans)

    def predict(self, vectors: list[torch.Tensor], task: str) -> list[list[str]]:
        head = self.head(task)
        return [head.predict(v) for v in vectors]

    def tag(self, texts: list[str] | None = None, words: list[list[str]] | None = None,
            task: str = "ner") -> list[dict]:
        """Tags (and entities, for ner and chunk) of each text or pre-split word list."""
        self.head(task)  # fail on an unknown task before any model work
        texts_in, spans, word_lists, char_spans = prepare_inputs(texts, words)
        tags = self.predict(self.word_vectors(texts_in, spans), task)
        return [
            result(word_lists[i], tags[i], char_spans[i], texts_in[i], task in ENTITY_TASKS)
            for i in range(len(tags))
        ]


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


def result(words: list[str], tags: list[str], char_spans: list[tuple[int, int]] | None, text: str,
           with_entities: bool) -> dict:
    out = {"words": words, "tags": tags}
    if with_entities:
        out["entities"] = [entity(span, words, char_spans, text) for span in decode_entities(tags)]
    return out


def entity(span: Span, words: list[str], char_spans: list[tuple[int, int]] | None, text: str) -> dict:
    if char_spans is None:  # pre-split words: word indices
        return {"text": " ".join(words[span.start:span.end]), "label": span.label,
                "start": span.start, "end": span.end}
    start, end = char_spans[span.start][0], char_spans[span.end - 1][1]
    return {"text": text[start:end], "label": span.label, "start": start, "end": end}
