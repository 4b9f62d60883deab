"""`n` choices: interleaving streams, closing them all, failing as the first error."""
from __future__ import annotations

import asyncio

import pytest

from magnet.errors import InvalidInputError
from magnet.sampling import SamplingParams
from magnet.server.choices import gather_all, interleaved, params_of_choices, started_streams


class Tracked:
    """An async stream of `items` (a pause between each) that records whether it was closed."""

    def __init__(self, items, fail_after: int | None = None):
        self.items, self.fail_after, self.closed = items, fail_after, False

    def __aiter__(self):
        return self.run()

    async def run(self):
        try:
            for i, item in enumerate(self.items):
                if self.fail_after == i:
                    raise InvalidInputError("bad choice")
                await asyncio.sleep(0.001)
                yield item
        finally:
            self.closed = True


def test_a_seed_makes_the_choices_reproducible_and_different():
    assert [p.seed for p in params_of_choices(SamplingParams(seed=5), 3)] == [5, 6, 7]
    assert [p.seed for p in params_of_choices(SamplingParams(), 2)] == [None, None]


async def test_interleaved_yields_every_item_of_every_stream_with_its_index():
    got = [pair async for pair in interleaved([aiter(Tracked("ab")), aiter(Tracked("xyz"))])]
    assert sorted(got) == [(0, "a"), (0, "b"), (1, "x"), (1, "y"), (1, "z")]
    assert [item for i, item in got if i == 1] == ["x", "y", "z"]  # each stream in its own order


async def test_closing_early_closes_every_stream():
    sources = [Tracked(range(100)), Tracked(range(100))]
    streams = [aiter(s) for s in sources]
    merged = interleaved(streams)
    await anext(merged)
    await merged.aclose()
    await asyncio.sleep(0.01)
    assert all(s.closed for s in sources)


async def test_a_failing_stream_raises_its_error_and_closes_the_others():
    sources = [Tracked(range(100)), Tracked(range(100), fail_after=2)]
    with pytest.raises(InvalidInputError, match="bad choice"):
        async for _ in interleaved([aiter(s) for s in sources]):
            pass
    assert all(s.closed for s in sources)


async def test_gather_all_raises_the_first_error_itself_and_cancels_the_rest():
    cancelled = asyncio.Event()

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def bad():
        raise InvalidInputError("no")

    with pytest.raises(InvalidInputError):
        await gather_all([slow(), bad()])
    assert cancelled.is_set()
    assert await gather_all([asyncio.sleep(0, result=1), asyncio.sleep(0, result=2)]) == [1, 2]


async def test_when_one_stream_fails_to_start_the_started_ones_are_closed():
    good = Tracked("abc")

    async def start_good():  # like service.generate_stream: the first chunk is awaited at start
        stream = aiter(good)
        await anext(stream)
        return stream

    async def start_bad():
        raise InvalidInputError("too long")

    with pytest.raises(InvalidInputError, match="too long"):
        await started_streams([start_good(), start_bad()])
    assert good.closed  # its generation is cancelled, not left running
