"""Token layouts: where each token sits, which role it has, which text position.

All inputs start with an anchor token (the tokenizer's BOS): its output
represents the first real token (token shift) and gives the first span of an
infill something to be predicted from when the prefix is empty.

Infill layout for segments s0 ▢ s1 ▢ s2 (span tokens are decoded later, so the
tensor holds only context; positions keep the text order):

    slot:      0    1 .. a   a+1 .. b     b+1 .. c     c+1
    token:     BOS  s0       s1           s2           EOS
    position:  0    1 .. a   a+1+g ..     ...+g        ...
                         ^ gap 1 starts at a+1, span tokens a+1, a+2, ...

Each gap reserves `g` positions because the true length is unknown until the
fill is written; the engine keeps `g` within the distances the adapter was
trained on (its manifest's `gap_distance`). The text ends with EOS, as every
training example does, so a gap at the end has a token to stop at.
"""
from __future__ import annotations

from dataclasses import dataclass


def anchor_token_id(tokenizer) -> int:
    """The anchor every input starts with, in training and serving alike: BOS, else EOS (for a
    tokenizer without one)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


@dataclass
class InfillLayout:
    ids: list[int]  # context tokens, anchor first
    positions: list[int]  # text position of each context token
    gap_starts: list[int]  # text position of each gap's first span token
    predictors: list[int]  # slot whose output predicts each gap's first token
    end_tokens: list[int]  # first token after each gap (EOS where the text ends there)
    trimmed_spaces: list[int]  # spaces cut from the end of the segment before each gap


def split_trailing_spaces(segment: str) -> tuple[str, int]:
    """BPE tokenizers attach a space to the next word: leave it to the fill."""
    stripped = segment.rstrip(" ")
    return stripped, len(segment) - len(stripped)


def infill_layout(anchor_id: int, eos_id: int, segment_ids: list[list[int]], trimmed: list[int],
                  gap_positions: int) -> InfillLayout:
    ids, positions = [anchor_id], [0]
    gap_starts, predictors, end_tokens = [], [], []
    cursor = 1  # next free text position
    for k, tokens in enumerate(segment_ids):
        if k > 0:  # a gap precedes this segment
            gap_starts.append(cursor)
            end_tokens.append(tokens[0] if tokens else eos_id)
            cursor += gap_positions
        if k < len(segment_ids) - 1:
            predictors.append(len(ids) + len(tokens) - 1)
        ids.extend(tokens)
        positions.extend(range(cursor, cursor + len(tokens)))
        cursor += len(tokens)
    ids.append(eos_id)
    positions.append(cursor)
    return InfillLayout(ids, positions, gap_starts, predictors, end_tokens, trimmed[:-1])


def embedding_ids(anchor_id: int, eos_id: int, instruction_ids: list[int], text_ids: list[int],
                  max_length: int, cut_left: bool = False) -> list[int]:
    """[anchor] instruction text [EOS], the text cut to fit max_length: its end cut off, or its
    start (`cut_left`, TEI's truncation_direction "left").

    The EOS output is the sentence embedding (last-token pooling, paper §3.2.2).
    """
    room = max(max_length - len(instruction_ids) - 2, 0)
    kept = text_ids[len(text_ids) - room:] if cut_left and len(text_ids) > room else text_ids[:room]
    return [anchor_id] + instruction_ids + kept + [eos_id]
