"""Word-level tagging (NER, POS, chunk): linear heads on frozen word vectors.

    from magnet.tagging import Tagger
    tagger = Tagger.load(engine)          # heads from magnet/defaults/heads/
    tagger.tag(["Peter lives in Brussels."], task="ner")

words, iob, metrics and conll need no torch; import them directly.
"""
from __future__ import annotations


def __getattr__(name: str):
    if name == "Tagger":
        from magnet.tagging.tagger import Tagger

        return Tagger
    raise AttributeError(name)


__all__ = ["Tagger"]
