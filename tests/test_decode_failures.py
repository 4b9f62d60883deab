"""Decodes that must not fail, and one that fails alone: a constrained fill whose answer starts
as the text after its gap, and a token choice that raises in a running batch (tiny model)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from magnet.batch import run_to_end
from magnet.sampling import INFILL_DEFAULTS, StructuredOutput


def constrained(*choices: str, **fields):
    return replace(INFILL_DEFAULTS, max_tokens=3, structured=StructuredOutput(choice=choices), **fields)


def test_a_fill_writes_the_token_its_suffix_starts_with_when_its_match_needs_it(tiny_engine):
    # the gap's end token is ","; before the match is complete it is text the choice needs
    assert tiny_engine.infill(["Yes", ", he said."], constrained(",")).text == ","
    fills = {tiny_engine.infill(["Yes", ", he said."], constrained(",", "!", temperature=1.0, seed=s)).text
             for s in range(12)}
    assert fills == {",", "!"}


class Exploding:
    """A span grammar whose mask raises: a bug in one request's own token choice."""

    def mask(self, logits, ends):
        raise RuntimeError("grammar bug")


def test_a_token_choice_that_raises_fails_its_decode_alone(tiny_engine):
    requests = [["The quick ", " the lazy dog."], ["A man ", " a guitar."]]
    params = replace(INFILL_DEFAULTS, max_tokens=4)
    batch = tiny_engine.start_infill(requests, [params] * 2)
    failing, other = batch.decodes
    failing.spans[0].grammar = Exploding()
    run_to_end(batch)
    with pytest.raises(RuntimeError, match="grammar bug"):
        failing.outcome()
    assert other.outcome().fills == tiny_engine.infill(requests[1], params).fills
