"""What each kind of request makes of its spans: an infill's fills, a generation's stream.

    InfillDecode     one row per candidate (best_of), one span per gap -> InfillCompletion
    GenerateDecode   one row, one span that holds the prompt            -> StreamChunks
"""
from __future__ import annotations

from collections.abc import Callable

from magnet.batch import Decode
from magnet.decoding import Span
from magnet.layout import InfillLayout
from magnet.sampling import InfillCompletion, StreamChunk


class InfillDecode(Decode):
    """best_of > 1 keeps the candidate under which the whole text is likeliest read left to
    right (`score`, causal mode): the same weights checking the hybrid guess."""

    def __init__(self, segments: list[str], candidates: list[tuple[InfillLayout, list[Span]]],
                 score: Callable[[list[str]], list[float]]):
        super().__init__([span for _, spans in candidates for span in spans])
        self.segments = segments
        self.candidates = candidates
        self.score = score

    def result(self) -> InfillCompletion:
        fills = [collect_fills(lay, spans) for lay, spans in self.candidates]
        if len(fills) == 1:
            return fills[0]
        scores = self.score([joined(self.segments, f.fills) for f in fills])
        return fills[max(range(len(fills)), key=scores.__getitem__)]


class GenerateDecode(Decode):
    """Text pieces as they are decoded; the result is the last chunk, with usage."""

    def __init__(self, span: Span):
        super().__init__([span])
        self.sent = 0  # characters handed out so far
        self.sent_tokens = 0  # token logprobs handed out so far
        self.sent_prompt = False  # the prompt's logprobs (echo) go out with the first chunk

    def poll(self) -> list[StreamChunk]:
        span = self.spans[0]
        ready = releasable(span.text, span.params.stop)
        if ready <= self.sent:
            return []
        piece, self.sent = span.text[self.sent:ready], ready
        return [StreamChunk(piece, logprobs=self.new_logprobs(), prompt_logprobs=self.unsent_prompt_logprobs())]

    def result(self) -> StreamChunk:
        span = self.spans[0]
        return StreamChunk(span.text[self.sent:], span.finish_reason, len(span.prompt_ids),
                           len(span.ids) + span.eos_generated,
                           logprobs=self.new_logprobs(), prompt_logprobs=self.unsent_prompt_logprobs())

    def unsent_prompt_logprobs(self):
        """The prompt's logprobs (echo) on the first chunk only."""
        if self.sent_prompt:
            return None
        self.sent_prompt = True
        return self.spans[0].prompt_logprobs

    def new_logprobs(self):
        """The logprobs of the tokens decoded since the last chunk (None when not asked for)."""
        logprobs = self.spans[0].logprobs
        if logprobs is None:
            return None
        fresh, self.sent_tokens = logprobs[self.sent_tokens:], len(logprobs)
        return fresh


def collect_fills(lay: InfillLayout, spans: list[Span]) -> InfillCompletion:
    # The space cut from before the gap belongs to the fill's first word.
    fills = [drop_leading_spaces(s.text, n) for s, n in zip(spans, lay.trimmed_spaces)]
    logprobs = [s.logprobs for s in spans] if spans[0].logprobs is not None else None
    return InfillCompletion(fills, [s.finish_reason for s in spans], len(lay.ids), sum(len(s.ids) for s in spans),
                            logprobs)


def joined(segments: list[str], fills: list[str]) -> str:
    """s0 f0 s1 f1 ... s_n: the text a fill completes."""
    return "".join(piece for pair in zip(segments, fills + [""]) for piece in pair)


def drop_leading_spaces(text: str, n: int) -> str:
    kept = text.lstrip(" ")
    return text[min(n, len(text) - len(kept)):]


def releasable(text: str, stops: tuple[str, ...]) -> int:
    """How much of a growing text can be sent: hold back a possible stop-string
    prefix and an incomplete UTF-8 character (decoded as U+FFFD)."""
    end = len(text.rstrip("\ufffd"))
    hold = max((len(s) - 1 for s in stops if s), default=0)
    return max(end - hold, 0)
