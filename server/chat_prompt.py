"""A chat as one prompt: the tokenizer's chat template, rendered as vLLM renders it
(`apply_chat_template(messages, tokenize=False, add_generation_prompt=True)`), and the
number of new tokens the context leaves after it.
"""
from __future__ import annotations

from typing import NamedTuple

from magnet.errors import InputTooLongError, InvalidInputError
from magnet.protocol import MAX_NEW_TOKENS
from magnet.server.context_limit import max_model_len


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt text, ending with the assistant's turn opened; 422 without a template."""
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidInputError(
            "this model's tokenizer has no chat template, so /v1/chat/completions cannot format "
            "messages: send your own prompt to /v1/completions, or serve a model whose tokenizer "
            "defines chat_template")
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError as exc:  # templates raise on what they refuse, e.g. roles out of turn
        raise InvalidInputError(f"the model's chat template refused these messages: {exc}") from None


class ChatPrompt(NamedTuple):
    text: str  # the rendered template
    ids: list[int]  # its tokens, as the generate path reads them (counted and encoded once)
    max_tokens: int


async def chat_prompt(service, messages: list[dict[str, str]], max_tokens: int | None) -> ChatPrompt:
    """The rendered prompt, its ids, and max_tokens as asked or by default the room the context leaves."""
    tokenizer = service.engine.tokenizer

    def render() -> tuple[str, list[int]]:
        prompt = render_chat(tokenizer, messages)
        return prompt, tokenizer(prompt)["input_ids"]  # special tokens as the generate path adds them

    prompt, ids = await service.tokenize("chat", render)
    if max_tokens is not None:
        return ChatPrompt(prompt, ids, max_tokens)
    room = max_model_len(service) - len(ids)
    if room < 1:
        raise InputTooLongError(f"the messages take {len(ids)} tokens, the limit is {max_model_len(service)}: "
                                "shorten them or drop earlier turns")
    return ChatPrompt(prompt, ids, min(room, MAX_NEW_TOKENS))
