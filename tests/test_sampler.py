"""The sampler: vLLM's meaning of every sampling field, on hand-made logits."""
from __future__ import annotations

import math

import pytest
import torch

from magnet.sampler import penalize, sample, truncate
from magnet.sampling import SamplingParams


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = torch.tensor([2.0, -1.0, 3.0, 0.5])
    out = penalize(logits, SamplingParams(repetition_penalty=2.0), prompt_ids=[0], output_ids=[1])
    assert out.tolist() == [1.0, -2.0, 3.0, 0.5]  # token 0 (prompt) and 1 (output) only
    assert logits.tolist() == [2.0, -1.0, 3.0, 0.5]  # the caller's tensor is left alone


def test_frequency_and_presence_penalties_count_the_output_only():
    logits = torch.zeros(4)
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)
    out = penalize(logits, params, prompt_ids=[3, 3], output_ids=[1, 1, 1, 2])
    assert out.tolist() == [0.0, -(3 * 0.5 + 0.25), -(0.5 + 0.25), 0.0]


def test_output_tokens_beyond_the_logits_width_are_not_penalised():
    # a tokenizer's added tokens can lie past the output projection's rows
    out = penalize(torch.zeros(4), SamplingParams(frequency_penalty=1.0), prompt_ids=(), output_ids=[7, 1, 7])
    assert out.tolist() == [0.0, -1.0, 0.0, 0.0]


def test_a_penalty_breaks_a_greedy_repeat():
    logits = torch.tensor([0.0, 5.0, 4.5])
    assert sample(logits, SamplingParams(), output_ids=[1, 1]) == 1
    assert sample(logits, SamplingParams(frequency_penalty=0.5), output_ids=[1, 1]) == 2
    assert sample(logits, SamplingParams(repetition_penalty=1.2), output_ids=[1]) == 2


def test_top_k_min_p_and_top_p_keep_the_right_tokens():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert (truncate(probs, SamplingParams(top_k=2)) > 0).tolist() == [True, True, False, False]
    assert (truncate(probs, SamplingParams(min_p=0.3)) > 0).tolist() == [True, True, True, False]
    assert (truncate(probs, SamplingParams(top_p=0.8)) > 0).tolist() == [True, True, False, False]
    assert (truncate(probs, SamplingParams(top_p=1e-300)) > 0).tolist() == [True, False, False, False]


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0, top_p=1e-300),
                                    SamplingParams(temperature=1e-30), SamplingParams(temperature=2.0, min_p=1.0)])
def test_extreme_settings_still_draw_a_valid_token(params):
    logits = torch.tensor([1.0, 30.0, -50.0, 2.0])
    generator = torch.Generator().manual_seed(0)
    assert sample(logits, params, generator) == 1


def test_top_k_sampling_never_leaves_the_top_k():
    logits = torch.tensor([math.log(p) for p in (0.4, 0.3, 0.2, 0.1)])
    generator = torch.Generator().manual_seed(0)
    drawn = {sample(logits, SamplingParams(temperature=1.0, top_k=2), generator) for _ in range(200)}
    assert drawn == {0, 1}


def test_ignore_eos_keeps_a_generation_going_but_a_gap_still_ends_at_its_suffix(tiny_engine):
    from magnet.decoding import Span, accept
    from magnet.protocol import GenerateRequest

    tokenizer, eos = tiny_engine.tokenizer, tiny_engine.tokenizer.eos_token_id
    params = GenerateRequest(prompt="a", ignore_eos=True).sampling(SamplingParams(), 8, [])
    assert params.ignore_eos
    generation = Span(0, 1, 5, None, params)
    assert accept(generation, eos, eos, tokenizer) and generation.open and generation.ids == [eos]
    plain = Span(0, 1, 5, None, SamplingParams(max_tokens=8))
    assert not accept(plain, eos, eos, tokenizer) and plain.finish_reason == "stop"
    trailing_gap = Span(0, 1, 5, eos, params)  # a gap at the end of the text ends at EOS regardless
    assert not accept(trailing_gap, eos, eos, tokenizer) and trailing_gap.finish_reason == "stop"
