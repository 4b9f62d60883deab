"""The engine on the tiny random Llama: invariants, not outputs."""
from __future__ import annotations

import pytest
import torch

from magnet.errors import InputTooLongError, InvalidInputError
from magnet.forward import hidden_states, logits
from magnet.layout import infill_layout
from magnet.masks import CONTEXT
from magnet.sampling import SamplingParams

SENTENCES = ["The quick brown fox.", "A man is playing a guitar on the stage.", "Paris is the capital."]


def test_embeddings_batched_equal_single(tiny_engine):
    together = tiny_engine.embed(SENTENCES).embeddings
    for i, text in enumerate(SENTENCES):
        torch.testing.assert_close(tiny_engine.embed([text]).embeddings[0], together[i], rtol=1e-4, atol=1e-5)
    assert torch.allclose(together.norm(dim=-1), torch.ones(3))


def test_embedding_is_the_bidirectional_last_token_output(tiny_engine):
    ids = tiny_engine.embed_ids(SENTENCES[0], tiny_engine.instruction, truncate=False)
    row = torch.tensor([ids])
    hidden = hidden_states(tiny_engine.model, row, torch.zeros_like(row), torch.arange(len(ids))[None])
    expected = torch.nn.functional.normalize(hidden[0, -1], dim=-1)
    torch.testing.assert_close(tiny_engine.embed([SENTENCES[0]]).embeddings[0], expected, rtol=1e-4, atol=1e-5)
    assert ids[-1] == tiny_engine.tokenizer.eos_token_id and ids[0] == tiny_engine.anchor_id


def test_instruction_changes_the_embedding(tiny_engine):
    a = tiny_engine.embed(SENTENCES[:1]).embeddings
    b = tiny_engine.embed(SENTENCES[:1], instruction="").embeddings
    assert (a - b).abs().max() > 1e-5


def test_too_long_input_names_the_limit_unless_truncated(tiny_loaded):
    from magnet.engine import Engine, EngineConfig

    engine = Engine(tiny_loaded, EngineConfig(max_length=40))
    long_text = "the fox " * 60
    with pytest.raises(InputTooLongError, match="limit is 40"):
        engine.embed([long_text])
    assert engine.embed([long_text], truncate=True).prompt_tokens == 40


@pytest.mark.parametrize("bad", [[], [""], ["  "], "a string"])
def test_empty_input_is_refused_with_a_message(tiny_engine, bad):
    with pytest.raises(InvalidInputError, match="empty"):
        tiny_engine.embed(bad if isinstance(bad, list) else bad)


def test_word_vectors_follow_the_token_shift(tiny_engine):
    text = "Paris is the capital."
    spans = [(0, 5), (6, 8), (9, 12), (13, 20), (20, 21)]
    words = tiny_engine.token_states([text], [spans])[0]
    assert words.shape == (5, tiny_engine.model.config.hidden_size)
    enc = tiny_engine.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor([[tiny_engine.anchor_id] + enc["input_ids"]])
    hidden = hidden_states(tiny_engine.model, ids, torch.zeros_like(ids), torch.arange(ids.shape[1])[None])[0]
    # word 0 = "Paris": the mean over its tokens j of the output at j-1 (anchor is slot 0)
    tokens = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if a < 5]
    torch.testing.assert_close(words[0], hidden[tokens].mean(0), rtol=1e-4, atol=1e-5)


def test_word_vectors_batched_equal_single_and_causal_differs(tiny_engine):
    texts = ["Paris is big.", "A man is playing a guitar."]
    spans = [[(0, 5), (6, 8), (9, 12), (12, 13)], [(0, 1), (2, 5), (6, 8), (9, 16), (17, 18), (19, 25), (25, 26)]]
    both = tiny_engine.token_states(texts, spans)
    for i in range(2):
        torch.testing.assert_close(tiny_engine.token_states([texts[i]], [spans[i]])[0], both[i], rtol=1e-4, atol=1e-5)
    causal = tiny_engine.causal_token_states(texts, spans)
    assert (causal[0][0] - both[0][0]).abs().max() > 1e-6
    # causal: a word's vector is read at its own tokens (nothing later can reach it)
    enc = tiny_engine.tokenizer(texts[0], add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor([[tiny_engine.anchor_id] + enc["input_ids"]])
    own = tiny_engine.model.get_decoder()(input_ids=ids).last_hidden_state[0, 1:]  # (n, H)
    first = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if a < 5]
    torch.testing.assert_close(causal[0][0], own[first].mean(0), rtol=1e-4, atol=1e-5)


def test_infill_layout_keeps_text_positions_and_reserves_the_gap():
    lay = infill_layout(anchor_id=1, eos_id=2, segment_ids=[[10, 11], [12], [13, 14]], trimmed=[1, 0, 0],
                        gap_positions=5)
    assert lay.ids == [1, 10, 11, 12, 13, 14, 2]  # the text ends with EOS, as in training
    assert lay.positions == [0, 1, 2, 8, 14, 15, 16]
    assert lay.gap_starts == [3, 9] and lay.predictors == [2, 3] and lay.end_tokens == [12, 13]


def test_a_gap_at_the_end_stops_at_eos():
    lay = infill_layout(anchor_id=1, eos_id=2, segment_ids=[[10, 11], []], trimmed=[0, 0], gap_positions=4)
    assert lay.ids == [1, 10, 11, 2] and lay.positions == [0, 1, 2, 7] and lay.end_tokens == [2]


def naive_greedy_infill(engine, segments, max_tokens, context_role=CONTEXT, predictor_role=None):
    """Re-encode context + span from scratch at every step (no cache): the reference,
    with the same end rules (never empty; end once the text after the gap is likely)."""
    lay = engine.layout(segments, SamplingParams(max_tokens=max_tokens))
    ends = [lay.end_tokens[0], engine.tokenizer.eos_token_id]
    span = []
    for _ in range(max_tokens):
        ids = torch.tensor([lay.ids + span])
        roles = torch.tensor([[context_role] * len(lay.ids) + [1] * len(span)])
        if predictor_role is not None:
            roles[0, lay.predictors[0]] = predictor_role
        positions = torch.tensor([lay.positions + list(range(lay.gap_starts[0], lay.gap_starts[0] + len(span)))])
        hidden = hidden_states(engine.model, ids, roles, positions)
        slot = lay.predictors[0] if not span else ids.shape[1] - 1
        row = logits(engine.model, hidden[0, slot])
        if not span:
            row[ends] = float("-inf")
        elif torch.softmax(row, -1)[ends[0]] >= engine.config.end_threshold:
            break
        token = int(row.argmax())
        if token in ends:
            break
        span.append(token)
    return span


def test_cached_infill_equals_re_encoding_everything(tiny_engine):
    segments = ["The quick brown", " over the lazy dog."]
    got = tiny_engine.infill(segments, SamplingParams(max_tokens=8))
    expected = naive_greedy_infill(tiny_engine, segments, 8)
    assert got.completion_tokens == len(expected)
    assert got.text == tiny_engine.tokenizer.decode(expected, skip_special_tokens=True)
    assert got.finish_reason in ("stop", "length")


def test_an_adapter_trained_on_left_to_right_context_is_served_so(tiny_loaded):
    from dataclasses import replace

    from magnet.engine import Engine
    from magnet.manifest import AdapterManifest
    from magnet.masks import LEFT_CONTEXT, AttentionMode

    manifest = AdapterManifest(base=tiny_loaded.base, objectives={"msg": {"context": "causal"}})
    engine = Engine(replace(tiny_loaded, manifest=manifest))
    segments = ["The quick brown", " over the lazy dog."]
    got = engine.infill(segments, SamplingParams(max_tokens=8))
    expected = naive_greedy_infill(engine, segments, 8, context_role=LEFT_CONTEXT)
    assert engine.infill_context is AttentionMode.LEFT_CONTEXT
    assert got.text == engine.tokenizer.decode(expected, skip_special_tokens=True)


@pytest.mark.parametrize("reading", ["causal_gap", "causal_gap_hidden"])
def test_an_adapter_trained_with_a_gap_reading_reads_the_suffix_from_the_first_fill_token(tiny_loaded, reading):
    from dataclasses import replace

    from magnet.engine import Engine
    from magnet.manifest import AdapterManifest
    from magnet.masks import GAP_PREDICTOR_ROLES, LEFT_CONTEXT, READING_MODES

    def first_logits(engine, suffix):
        batch = engine.start_infill([["The quick brown", suffix]], [SamplingParams(max_tokens=4)])
        return batch.decodes[0].candidates[0][1][0].logits.clone()

    engines = {name: Engine(replace(tiny_loaded, manifest=AdapterManifest(
        base=tiny_loaded.base, objectives={"msg": {"context": name}}))) for name in ("causal", "causal_gap", reading)}
    engine = engines[reading]
    assert engine.infill_context is READING_MODES[reading]
    segments = ["The quick brown", " over the lazy dog."]
    got = engine.infill(segments, SamplingParams(max_tokens=8))
    expected = naive_greedy_infill(engine, segments, 8, context_role=LEFT_CONTEXT,
                                   predictor_role=GAP_PREDICTOR_ROLES[engine.infill_context])
    assert got.text == engine.tokenizer.decode(expected, skip_special_tokens=True)
    # the first fill token: read from the text before the gap alone under causal, from both here
    causal = [first_logits(engines["causal"], suffix) for suffix in (" over the dog.", " under a cat!")]
    gap = [first_logits(engine, suffix) for suffix in (" over the dog.", " under a cat!")]
    torch.testing.assert_close(causal[0], causal[1])
    assert (gap[0] - gap[1]).abs().max() > 1e-4
    # hidden: the suffix is read without the token before the gap, so the logits differ from causal_gap's
    moved = (gap[0] - first_logits(engines["causal_gap"], " over the dog.")).abs().max() > 1e-4
    assert moved == (reading == "causal_gap_hidden")


def test_infill_batched_equals_single_and_spans_are_independent(tiny_engine):
    params = SamplingParams(max_tokens=6)
    requests = [["The quick brown", " over the dog."], ["A man", " a guitar", " the stage."]]
    together = tiny_engine.infill_batch(requests, [params, params])
    for request, result in zip(requests, together):
        assert tiny_engine.infill(request, params).fills == result.fills
    assert len(together[1].fills) == 2


def test_end_rules_never_end_empty_and_end_when_the_suffix_is_likely():
    from magnet.decoding import Span, end_rules

    row = torch.tensor([0.0, 5.0, 0.0, 1.0])  # token 1 (the text after the gap) is likely
    span = Span(0, 1, 0, end_token=1, params=SamplingParams(), min_tokens=1, end_threshold=0.05)
    masked = end_rules(span, row, eos_id=3)
    assert masked[1] == float("-inf") and masked[3] == float("-inf") and masked[0] == 0.0
    span.ids.append(2)
    assert end_rules(span, row, eos_id=3) is None  # p(token 1) ~ 0.96 >= 0.05: the fill ends
    assert end_rules(span, torch.tensor([9.0, 0.0, 0.0, 0.0]), eos_id=3) is not None
    generation = Span(0, 1, 0, end_token=None, params=SamplingParams())
    assert torch.equal(end_rules(generation, row, eos_id=3), row)  # causal generation: untouched


def test_infill_stops_by_itself_once_the_suffix_is_likely(tiny_loaded):
    from magnet.engine import Engine, EngineConfig

    eager = Engine(tiny_loaded, EngineConfig(end_threshold=1e-12))  # any chance of the suffix ends it
    result = eager.infill(["Paris is", " the capital."], SamplingParams(max_tokens=10))
    assert result.finish_reason == "stop" and result.completion_tokens == 1  # never empty, then ends
    patient = Engine(tiny_loaded, EngineConfig(end_threshold=1.0))  # only when chosen
    assert patient.infill(["Paris is", " the capital."], SamplingParams(max_tokens=10)).completion_tokens >= 1


def test_infill_reports_length_and_honours_stop_strings(tiny_engine):
    result = tiny_engine.infill(["The", ""], SamplingParams(max_tokens=3))
    assert result.finish_reasons[0] in ("length", "stop") and result.completion_tokens <= 3
    full = tiny_engine.generate("Paris is", SamplingParams(max_tokens=12))
    if len(full.text) > 3:
        stop = full.text[2:4]
        cut = tiny_engine.generate("Paris is", SamplingParams(max_tokens=12, stop=(stop,)))
        assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"


def test_generate_greedy_equals_transformers_generate(tiny_engine):
    prompt = "Paris is the"
    ours = tiny_engine.generate(prompt, SamplingParams(max_tokens=10))
    ids = tiny_engine.tokenizer(prompt, return_tensors="pt").input_ids
    out = tiny_engine.model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0,
                                     eos_token_id=tiny_engine.tokenizer.eos_token_id)
    theirs = out[0, ids.shape[1]:].tolist()
    theirs = [t for t in theirs if t != tiny_engine.tokenizer.eos_token_id]
    assert ours.text == tiny_engine.tokenizer.decode(theirs, skip_special_tokens=True)
    assert ours.prompt_tokens == ids.shape[1]


def test_streaming_pieces_add_up_to_the_completion(tiny_engine):
    params = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.9, seed=7)
    chunks = list(tiny_engine.generate_stream("A man is", params))
    whole = tiny_engine.generate("A man is", params)
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].finish_reason == whole.finish_reason
    assert chunks[-1].completion_tokens == whole.completion_tokens


def test_seeded_sampling_is_reproducible_and_seeds_differ(tiny_engine):
    a = tiny_engine.generate("The", SamplingParams(max_tokens=16, temperature=1.0, seed=1))
    b = tiny_engine.generate("The", SamplingParams(max_tokens=16, temperature=1.0, seed=1))
    c = tiny_engine.generate("The", SamplingParams(max_tokens=16, temperature=1.0, seed=2))
    assert a.text == b.text and a.text != c.text


def test_bad_generation_parameters_are_refused(tiny_engine):
    with pytest.raises(InvalidInputError, match="max_tokens"):
        tiny_engine.generate("Hi", SamplingParams(max_tokens=0))
    with pytest.raises(InvalidInputError, match="prompt is empty"):
        tiny_engine.generate("", SamplingParams())
    with pytest.raises(InvalidInputError, match="two segments"):
        tiny_engine.infill(["only one"], SamplingParams())
    with pytest.raises(InputTooLongError, match="lower max_tokens"):
        tiny_engine.generate("Hi", SamplingParams(max_tokens=10**6))


def test_best_of_keeps_the_candidate_whose_whole_text_is_likeliest(tiny_engine):
    from magnet.batch import run_to_end
    from magnet.decodes import collect_fills, joined

    segments = ["The cat sat on the", " mat and slept all day."]
    params = SamplingParams(max_tokens=6, best_of=3, temperature=1.0, seed=0)
    gaps = tiny_engine.candidate_gaps(params)
    assert gaps == [1, 2, 6]  # spread over (1, max_tokens) when no manifest says otherwise
    batch = tiny_engine.start_infill([segments], [params])
    decode = batch.decodes[0]
    run_to_end(batch)
    assert [lay.positions[-1] - len(lay.ids) + 1 for lay, _ in decode.candidates] == gaps  # one row per width
    alone = [collect_fills(lay, spans) for lay, spans in decode.candidates]
    scores = tiny_engine.causal_logprobs([joined(segments, c.fills) for c in alone])
    best = alone[max(range(len(alone)), key=scores.__getitem__)]
    assert tiny_engine.infill(segments, params).fills == best.fills
    assert len({tuple(c.fills) for c in alone}) > 1, "the gap length must change the fill"


def test_causal_logprobs_are_the_models_own_left_to_right_scores(tiny_engine):
    text = "Paris is lovely."
    ids = [tiny_engine.anchor_id] + tiny_engine.tokens(text)
    out = tiny_engine.model(input_ids=torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
    want = float(out.gather(1, torch.tensor(ids[1:])[:, None]).sum())
    got = tiny_engine.causal_logprobs([text, "A longer second text to pad the batch with."])[0]
    assert got == pytest.approx(want, abs=1e-3)


class CallCountingTokenizer:
    """The tokenizer, counting the characters it was given to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.chars = tokenizer, 0

    def __call__(self, texts, **kwargs):
        self.chars += sum(map(len, [texts] if isinstance(texts, str) else texts))
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_a_text_longer_than_the_limit_can_span_is_refused_or_cut_before_it_is_tokenized(tiny_engine, monkeypatch):
    from magnet.errors import InputTooLongError
    from magnet.layout import embedding_ids
    from magnet.limits import most_chars

    text = "hello world " * (most_chars(tiny_engine.tokenizer, tiny_engine.max_length) * 8 // 12)  # 8x what fits
    head = tiny_engine.instruction_ids(tiny_engine.instruction)
    whole = tiny_engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    counting = CallCountingTokenizer(tiny_engine.tokenizer)
    monkeypatch.setattr(tiny_engine, "tokenizer", counting)
    with pytest.raises(InputTooLongError, match="characters, more than"):
        tiny_engine.embedding_inputs([text])
    assert counting.chars == 0
    for cut_left in (False, True):  # the same rows as tokenizing all of it, then cutting
        [row] = tiny_engine.embedding_inputs([text], truncate=True, cut_left=cut_left)
        assert row == embedding_ids(tiny_engine.anchor_id, counting.eos_token_id, head, whole, tiny_engine.max_length,
                                    cut_left)
    assert counting.chars <= 2 * most_chars(counting.tokenizer, tiny_engine.max_length) < len(text) / 2
    chars = counting.chars
    with pytest.raises(InputTooLongError, match="the prompt has .* characters"):
        tiny_engine.generate(text)
    assert counting.chars == chars
