"""Token log-probabilities (magnet.sampling.TokenLogprob, the same from vLLM and torch) in
OpenAI's two shapes:

    completion_logprobs   /v1/completions: {tokens, token_logprobs, top_logprobs, text_offset}
                          top_logprobs[i] = {the token itself, then its k likeliest: logprob}
    chat_logprobs         /v1/chat/completions: {content: [{token, logprob, bytes,
                          top_logprobs: [{token, logprob, bytes}] (the k likeliest)}]}

A token's text is the tokenizer's decoding of it alone (as vLLM shows it), so a byte that
is only part of a UTF-8 character reads as U+FFFD. -inf (a token the model rules out) is
sent as -9999.0, as OpenAI and vLLM do: JSON has no infinity.
"""
from __future__ import annotations

from magnet.protocol import CompletionLogprobs
from magnet.sampling import TokenLogprob
from magnet.server.chat_models import ChatLogprobs, ChatTokenLogprob, TopLogprob

FLOOR = -9999.0


def completion_logprobs(tokenizer, entries: list[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    """Offsets count from the start of the choice's text (the prompt's, with echo), as vLLM
    does; a streamed chunk's start where the previous chunk's tokens ended (`offset`)."""
    tokens, logprobs, tops, offsets = [], [], [], []
    for entry in entries:
        text = token_text(tokenizer, entry.token)
        tokens.append(text)
        logprobs.append(floored(entry.logprob))
        offsets.append(offset)
        offset += len(text)
        if entry.logprob is None:
            tops.append(None)
        else:
            alternatives = ((entry.token, entry.logprob), *entry.top)
            tops.append({token_text(tokenizer, t): floored(lp) for t, lp in alternatives})
    return CompletionLogprobs(tokens=tokens, token_logprobs=logprobs, top_logprobs=tops, text_offset=offsets)


def chat_logprobs(tokenizer, entries: list[TokenLogprob]) -> ChatLogprobs:
    return ChatLogprobs(content=[
        ChatTokenLogprob(**described(tokenizer, entry.token, entry.logprob),
                         top_logprobs=[TopLogprob(**described(tokenizer, t, lp)) for t, lp in entry.top])
        for entry in entries])


def described(tokenizer, token: int, logprob: float) -> dict:
    text = token_text(tokenizer, token)
    return {"token": text, "logprob": floored(logprob), "bytes": list(text.encode("utf-8"))}


def token_text(tokenizer, token: int) -> str:
    return tokenizer.decode([token])


def floored(logprob: float | None) -> float | None:
    return None if logprob is None else max(logprob, FLOOR)
