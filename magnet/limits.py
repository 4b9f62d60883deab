"""The input rules every backend applies, written once (the torch engine and vLLM call these).

Each raises a magnet.errors class whose message says what to change.
"""
from __future__ import annotations

import weakref

from magnet.errors import InputTooLongError, InvalidInputError
from magnet.sampling import SamplingParams


def require_fits(n_tokens: int, limit: int, what: str, hint: str = "set truncate=true") -> None:
    if n_tokens > limit:
        raise InputTooLongError(f"{what} has {n_tokens} tokens; the limit is {limit}. Shorten it or {hint}.")


# Characters before tokens: tokenizing is CPU work on one thread, before any token is counted
# (a 2 MB text takes ~1 s on the embedded model's tokenizer), so a text longer than `limit`
# tokens could ever span is refused, or cut, by its length alone.
_longest: "weakref.WeakKeyDictionary[object, int]" = weakref.WeakKeyDictionary()


def most_chars(tokenizer, limit: int) -> int:
    """The most characters `limit` tokens can span, with a token to spare: each covers at most
    as many characters as the longest string of the vocabulary (byte-level: one per byte)."""
    longest = _longest.get(tokenizer)
    if longest is None:
        longest = _longest[tokenizer] = max(map(len, tokenizer.get_vocab()))
    return (limit + 1) * longest


def require_fitting_chars(tokenizer, text: str, limit: int, what: str, hint: str = "set truncate=true") -> None:
    if len(text) > most_chars(tokenizer, limit):
        raise InputTooLongError(f"{what} has {len(text)} characters, more than {limit} tokens can hold; the limit "
                                f"is {limit} tokens. Shorten it or {hint}.")


def cut_to_chars(tokenizer, text: str, limit: int, keep_end: bool = False) -> str:
    """`text` cut to what `limit` tokens can span (the end kept with `keep_end`): truncation's
    first pass, before the tokenizer sees the whole of a huge text."""
    most = most_chars(tokenizer, limit)
    return text if len(text) <= most else text[-most:] if keep_end else text[:most]


def require_max_tokens(params: SamplingParams) -> None:
    """At least one token, or 0 when the prompt's own logprobs are asked for (echo: score only)."""
    if params.max_tokens == 0 and params.prompt_logprobs is not None:
        return
    if params.max_tokens < 1:
        raise InvalidInputError(f"max_tokens must be at least 1 (0 only with echo and logprobs), got {params.max_tokens}")


def prompt_token_ids(tokenizer, prompt: str, params: SamplingParams, limit: int) -> list[int]:
    """The prompt's ids with the tokenizer's own special tokens (as vLLM does), checked to fit
    `limit` together with max_tokens."""
    if not isinstance(prompt, str) or not prompt:
        raise InvalidInputError("prompt is empty: give some text to continue")
    require_fitting_chars(tokenizer, prompt, limit, "the prompt", "lower max_tokens")
    return checked_prompt_ids(tokenizer(prompt)["input_ids"], params, limit)


def checked_prompt_ids(ids: list[int], params: SamplingParams, limit: int) -> list[int]:
    """Ids tokenized earlier (a chat's rendered prompt), checked as `prompt_token_ids` checks."""
    require_max_tokens(params)
    require_fits(len(ids) + params.max_tokens, limit, "the prompt plus max_tokens", "lower max_tokens")
    return ids
