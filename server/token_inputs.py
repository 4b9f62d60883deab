"""Inputs given as token ids, as OpenAI (and TEI) allow them besides text:

    "input": "text"              one text               "input": [1, 2, 3]          one input as ids
    "input": ["a", "b"]          several texts          "input": [[1, 2], [3, 4]]   several, as ids

Ids must be this model's own: they are checked against its vocabulary (a 422 naming the first
id outside it) and decoded with its tokenizer into the text they spell, which is then embedded
(with the adapter's instruction, like any text). A completion's prompt of ids is continued from
the ids themselves (the text they spell need not tokenize back to them) and echoed as that text. Ids of another tokenizer spell
other words: LangChain's `OpenAIEmbeddings` tokenizes with tiktoken (an OpenAI vocabulary)
unless `check_embedding_ctx_length=False`, so its ids are refused when they fall outside this
vocabulary and would embed the wrong text when they do not; docs/service.md says to set it.
"""
from __future__ import annotations

from pydantic import StrictInt

from magnet.errors import InvalidInputError
from magnet.protocol import as_list, check_texts

TokenIds = list[StrictInt]
# Pydantic's smart union picks the branch a JSON value matches exactly: "x", ["x"], [1], [[1]].
TextsOrIds = str | list[str] | TokenIds | list[TokenIds]

FOREIGN_IDS_HINT = ("token ids must come from this model's tokenizer (POST /tokenize gives them); LangChain's "
                    "OpenAIEmbeddings sends OpenAI's tiktoken ids unless check_embedding_ctx_length=False")


def refuse_mixed_inputs(value, field: str):
    """A before-validator: a list mixing texts and ids (or ids and id lists) gets one clear message
    instead of one per branch of the union."""
    if isinstance(value, list) and value:
        kinds = {"text" if isinstance(v, str) else "ids" if isinstance(v, list) else "id" for v in value}
        if len(kinds) > 1:
            raise ValueError(f"{field} mixes texts, ids and id lists: send a string, a list of strings, a list of "
                             "token ids or a list of token-id lists")
    return value


def check_inputs(value, field: str, limit: int | None = None):
    """Validation without the tokenizer: texts non-blank, id lists non-empty, ids non-negative;
    the number of inputs is the server's to count (server/large_inputs.py)."""
    if not has_ids(value):
        check_texts(as_list(value), field, limit)
        return value
    rows = as_id_lists(value)
    if not rows:
        raise ValueError(f"{field} is an empty list: send at least one input")
    for i, ids in enumerate(rows):
        where = f"{field}[{i}]" if isinstance(value[0], list) else field
        if not ids:
            raise ValueError(f"{where} is an empty list of token ids: send at least one id")
        negative = next((j for j, token in enumerate(ids) if token < 0), None)
        if negative is not None:
            raise ValueError(f"{where}[{negative}] is {ids[negative]}: token ids are >= 0")
    return value


def refuse_dimensions(value: int | None) -> int | None:
    """`dimensions` (OpenAI, TEI): only the model's own hidden size is served; None passes."""
    if value is not None:
        raise ValueError("dimensions is not supported (the model's hidden size is fixed): omit it")
    return value


def has_ids(value) -> bool:
    return isinstance(value, list) and bool(value) and not isinstance(value[0], str)


def as_id_lists(value) -> list[list[int]]:
    """[1, 2] -> [[1, 2]]; [[1], [2]] stays."""
    return [value] if value and isinstance(value[0], int) else list(value)


def texts_of(value, tokenizer, field: str) -> list[str]:
    """The inputs as texts: texts as they are, id lists checked and decoded (CPU work: run it on
    the tokenizer thread, service.tokenize)."""
    if not has_ids(value):
        return as_list(value)
    vocabulary = len(tokenizer)
    rows = as_id_lists(value)
    texts = []
    for i, ids in enumerate(rows):
        bad = next((j for j, token in enumerate(ids) if token >= vocabulary), None)
        if bad is not None:
            where = f"{field}[{i}][{bad}]" if isinstance(value[0], list) else f"{field}[{bad}]"
            raise InvalidInputError(f"{where} is token id {ids[bad]}, outside this model's vocabulary "
                                    f"(ids 0 to {vocabulary - 1}): {FOREIGN_IDS_HINT}")
        text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if not text.strip():
            raise InvalidInputError(f"{field}[{i}] decodes to blank text: send ids of some non-blank content")
        texts.append(text)
    return texts


async def resolve_texts(service, served, value, field: str) -> list[str]:
    """texts_of with the served model's tokenizer (`served`: server/registry.py's ServedModel),
    on the tokenizer thread when there are ids."""
    if not has_ids(value):
        return as_list(value)
    tokenizer = served.tokenizer
    return await service.tokenize("detokenize", lambda: texts_of(value, tokenizer, field))
