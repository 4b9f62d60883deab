"""The shipped default heads on the real embedded model + default adapter (slow)."""
from __future__ import annotations

import pytest


@pytest.mark.slow
def test_default_heads_tag_a_plain_sentence():
    from magnet.engine import Engine
    from magnet.loading import ModelSpec
    from magnet.tagging import Tagger

    tagger = Tagger.load(Engine.from_spec(ModelSpec(device="cpu")))  # refuses heads of another model
    assert sorted(tagger.tasks) == ["chunk", "ner", "pos"]
    text = "Peter Blackburn works for the European Commission in Brussels."
    [ner] = tagger.tag([text], task="ner")
    assert all(text[e["start"]:e["end"]] == e["text"] for e in ner["entities"])
    found = {(e["text"], e["label"]) for e in ner["entities"]}
    assert {("Brussels", "LOC"), ("European Commission", "ORG")} <= found
    [pos] = tagger.tag([text], task="pos")
    assert pos["tags"][:3] == ["NNP", "NNP", "VBZ"]
