"""The input rules every backend applies, written once (the torch engine and vLLM call these).

Each raises a magnet.errors class whose message says what to change.
"""
from __future__ import annotations

from magnet.errors import InputTooLongError, InvalidInputError
from magnet.sampling import SamplingParams


def require_fits(n_tokens: int, limit: int, what: str, hint: str = "set truncate=true") -> None:
    if n_tokens > limit:
        raise InputTooLongError(f"{what} has {n_tokens} tokens; the limit is {limit}. Shorten it or {hint}.")


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
    return checked_prompt_ids(tokenizer(prompt)["input_ids"], params, limit)


def checked_prompt_ids(ids: list[int], params: SamplingParams, limit: int) -> list[int]:
    """Ids tokenized earlier (a chat's rendered prompt), checked as `prompt_token_ids` checks."""
    require_max_tokens(params)
    require_fits(len(ids) + params.max_tokens, limit, "the prompt plus max_tokens", "lower max_tokens")
    return ids
