"""TEI's truncation_direction="left": an input too long for the model loses its start, not its end.

The engine cuts an embedding input on the right ([anchor] instruction text [EOS], the text cut
to fit: magnet/layout.py). For a left cut, a text whose tokens do not fit is replaced by the text
its last tokens spell (decoded), so what the engine sees fits; it still cuts on the right should
the decoded text re-tokenize a token longer.
"""
from __future__ import annotations


def cut_from_left(engine, texts: list[str], instruction: str | None) -> list[str]:
    """Each text whose tokens exceed the room beside `instruction` keeps only its last tokens
    (CPU work: run it on the tokenizer thread, service.tokenize)."""
    head = engine.tokens(engine.instruction if instruction is None else instruction)
    room = max(engine.max_length - len(head) - 2, 1)  # 2: the anchor and the EOS around them
    cut = []
    for text in texts:
        ids = engine.tokens(text)
        cut.append(text if len(ids) <= room else
                   engine.tokenizer.decode(ids[-room:], skip_special_tokens=False, clean_up_tokenization_spaces=False))
    return cut
