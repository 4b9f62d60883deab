"""The running decode batch: rows join and leave mid-decode without changing anyone's tokens."""
from __future__ import annotations

from dataclasses import replace

from magnet.batch import DecodeBatch, run_to_end
from magnet.sampling import INFILL_DEFAULTS, SamplingParams

GREEDY = SamplingParams(max_tokens=12)
INFILL = replace(INFILL_DEFAULTS, max_tokens=8)
GAPS = [["The cat ", " on the mat."], ["Once ", " a time, ", " lived a king."], ["A", " B"]]
PROMPTS = ["The quick brown", "Once upon", "In the middle of the night the"]


def tokens_of(decode) -> list[list[int]]:
    return [list(span.ids) for span in decode.spans]


def alone(engine, kind: str, item) -> list[list[int]]:
    batch = engine.start_infill([item], [INFILL]) if kind == "infill" else engine.start_generate([item], [GREEDY])
    decode = batch.decodes[0]
    run_to_end(batch)
    return tokens_of(decode)


def start(engine, kind: str, item) -> DecodeBatch:
    return engine.start_infill([item], [INFILL]) if kind == "infill" else engine.start_generate([item], [GREEDY])


def test_rows_joining_a_running_batch_mid_decode_decode_as_they_would_alone(tiny_engine):
    work = [("generate", PROMPTS[0]), ("infill", GAPS[0]), ("infill", GAPS[1]),
            ("generate", PROMPTS[1]), ("infill", GAPS[2]), ("generate", PROMPTS[2])]
    expected = [alone(tiny_engine, kind, item) for kind, item in work]
    running = DecodeBatch(tiny_engine.model, tiny_engine.tokenizer)
    decodes = []
    for kind, item in work:  # a new request joins after every step
        joining = start(tiny_engine, kind, item)
        decodes.append(joining.decodes[0])
        running.merge(joining)
        running.step()
    run_to_end(running)
    assert [tokens_of(d) for d in decodes] == expected
    assert all(d.done for d in decodes) and running.rows == 0


def test_a_row_joining_does_not_change_the_others(tiny_engine):
    running = tiny_engine.start_generate(PROMPTS[:2], [GREEDY, GREEDY])
    first, second = running.decodes
    for _ in range(3):
        running.step()
    running.merge(tiny_engine.start_infill([GAPS[1]], [INFILL]))  # a longer context: the cache is padded
    run_to_end(running)
    assert tokens_of(first) == alone(tiny_engine, "generate", PROMPTS[0])
    assert tokens_of(second) == alone(tiny_engine, "generate", PROMPTS[1])


def test_a_dropped_row_leaves_at_once_and_the_others_finish_unchanged(tiny_engine):
    long = replace(GREEDY, max_tokens=40)
    running = tiny_engine.start_generate(PROMPTS, [GREEDY, long, GREEDY])
    kept, cancelled, other = running.decodes
    running.step()
    running.drop([cancelled])
    assert running.rows == 2 and cancelled not in running.decodes
    produced = len(cancelled.spans[0].ids)
    run_to_end(running)
    assert len(cancelled.spans[0].ids) == produced  # it stopped where it was dropped
    assert tokens_of(kept) == alone(tiny_engine, "generate", PROMPTS[0])
    assert tokens_of(other) == alone(tiny_engine, "generate", PROMPTS[2])


def test_columns_no_row_uses_are_dropped(tiny_engine):
    long_prompt = " ".join(PROMPTS * 6)  # a long row that leaves after 2 tokens
    running = tiny_engine.start_infill([GAPS[0]], [INFILL])
    survivor = running.decodes[0]
    running.merge(tiny_engine.start_generate([long_prompt], [replace(GREEDY, max_tokens=2)]))
    wide = running.columns
    while len(running.decodes) == 2:
        running.step()
    assert running.columns < wide / 2  # the long prompt's columns left with its row
    assert (running.roles != -1).any(dim=0).all()  # every column left is used by some row
    run_to_end(running)
    assert tokens_of(survivor) == alone(tiny_engine, "infill", GAPS[0])
