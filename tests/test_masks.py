"""The attention mask as data, checked through a real (tiny, random) Llama forward."""
from __future__ import annotations

import torch

from magnet.forward import hidden_states
from magnet.masks import CONTEXT, PAD, AttentionMode, allowed_attention, positions_from_padding, roles_for_mode


def forward(model, ids, roles, positions=None):
    if positions is None:
        positions = torch.arange(ids.shape[1])[None].expand_as(ids)
    return hidden_states(model, ids, roles, positions)


def random_ids(loaded, n=10, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, loaded.model.config.vocab_size, (batch, n), generator=g)


def test_causal_mode_equals_the_models_own_causal_forward(tiny_loaded):
    model = tiny_loaded.model
    ids = random_ids(tiny_loaded, 12, batch=2)
    own = model.get_decoder()(input_ids=ids).last_hidden_state
    roles = roles_for_mode(AttentionMode.CAUSAL, torch.ones_like(ids))
    torch.testing.assert_close(forward(model, ids, roles), own)


def test_a_later_context_token_reaches_token_zero_except_in_causal_mode(tiny_loaded):
    model = tiny_loaded.model
    ids = random_ids(tiny_loaded, 10)
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % model.config.vocab_size
    ones = torch.ones_like(ids)
    hybrid = torch.tensor([[CONTEXT] * 4 + [1, 1, 1] + [CONTEXT] * 3])
    for roles, should_change in (
        (roles_for_mode(AttentionMode.BIDIRECTIONAL, ones), True),
        (hybrid, True),
        (roles_for_mode(AttentionMode.CAUSAL, ones), False),
    ):
        delta = (forward(model, ids, roles)[0, 0] - forward(model, changed, roles)[0, 0]).abs().max()
        assert (delta > 1e-6) == should_change, (roles, delta)


def test_span_tokens_never_see_later_span_tokens_or_other_spans(tiny_loaded):
    model = tiny_loaded.model
    ids = random_ids(tiny_loaded, 12)
    roles = torch.tensor([[CONTEXT, CONTEXT, 1, 1, 1, 1, CONTEXT, CONTEXT, 2, 2, 2, CONTEXT]])
    base = forward(model, ids, roles)[0]
    # change the last token of span 1 (slot 5): span 1 before it, span 2 and context are untouched
    changed = ids.clone()
    changed[0, 5] = (changed[0, 5] + 1) % model.config.vocab_size
    after = forward(model, changed, roles)[0]
    untouched = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    torch.testing.assert_close(after[untouched], base[untouched])
    assert (after[5] - base[5]).abs().max() > 1e-6
    # a span token sees every context token, also the ones after its span
    changed = ids.clone()
    changed[0, 11] = (changed[0, 11] + 1) % model.config.vocab_size
    after = forward(model, changed, roles)[0]
    assert (after[2] - base[2]).abs().max() > 1e-6 and (after[9] - base[9]).abs().max() > 1e-6


def test_span_order_follows_positions_not_slots():
    roles = torch.tensor([[CONTEXT, 1, 1]])
    positions = torch.tensor([[0, 5, 4]])  # the span's first token sits in the last slot
    allowed = allowed_attention(roles, roles, positions, positions)[0, 0]
    assert allowed[2, 1].item() is False and allowed[1, 2].item() is True


def test_padding_never_changes_a_real_tokens_output(tiny_loaded):
    model = tiny_loaded.model
    ids = random_ids(tiny_loaded, 8)
    pad = torch.full((1, 3), 7)
    for mode in (AttentionMode.BIDIRECTIONAL, AttentionMode.CAUSAL):
        alone = forward(model, ids, roles_for_mode(mode, torch.ones_like(ids)))[0]
        for padded, padding in (
            (torch.cat([pad, ids], 1), torch.tensor([[0] * 3 + [1] * 8])),  # left
            (torch.cat([ids, pad], 1), torch.tensor([[1] * 8 + [0] * 3])),  # right
        ):
            out = forward(model, padded, roles_for_mode(mode, padding), positions_from_padding(padding))[0]
            torch.testing.assert_close(out[padding[0].bool()], alone, rtol=1e-4, atol=1e-5)


def test_padding_rows_get_no_nan_and_roles_mark_them():
    padding = torch.tensor([[0, 1, 1], [1, 1, 0]])
    roles = roles_for_mode("bidirectional", padding)
    assert roles.tolist() == [[PAD, CONTEXT, CONTEXT], [CONTEXT, CONTEXT, PAD]]
    assert positions_from_padding(padding).tolist() == [[0, 0, 1], [0, 1, 0]]
    allowed = allowed_attention(roles, roles, positions_from_padding(padding), positions_from_padding(padding))
    assert allowed.any(dim=-1).all()  # every query row attends to something


def test_left_context_reads_left_to_right_and_spans_still_read_all_of_it(tiny_loaded):
    from magnet.masks import LEFT_CONTEXT

    model = tiny_loaded.model
    ids = random_ids(tiny_loaded, 10)
    ones = torch.ones_like(ids)
    # a prefill of left-to-right context is the model's own causal reading
    causal = forward(model, ids, roles_for_mode(AttentionMode.CAUSAL, ones))
    torch.testing.assert_close(forward(model, ids, roles_for_mode(AttentionMode.LEFT_CONTEXT, ones)), causal)
    # prefix | span | suffix: changing the suffix moves the span, never the prefix or the span's absence
    hybrid = torch.tensor([[LEFT_CONTEXT] * 4 + [1, 1] + [LEFT_CONTEXT] * 4])
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % model.config.vocab_size
    a, b = forward(model, ids, hybrid), forward(model, changed, hybrid)
    torch.testing.assert_close(a[0, :4], b[0, :4])  # the prefix reads only what is before it
    assert not torch.allclose(a[0, 4:6], b[0, 4:6])  # the span reads the suffix
    # the suffix does not read the span: changing a span token leaves the suffix as it was
    span_changed = ids.clone()
    span_changed[0, 4] = (span_changed[0, 4] + 1) % model.config.vocab_size
    torch.testing.assert_close(forward(model, span_changed, hybrid)[0, 6:], a[0, 6:])


def test_a_hidden_gap_predictor_reads_all_the_context_and_only_the_fill_and_bidirectional_context_read_it():
    from magnet.masks import GAP_PREDICTOR, LEFT_CONTEXT

    # slots: 0-1 left context, 2 the token before the gap, 3 left context after the gap,
    # 4 a fill token (span 1), 5 bidirectional context
    roles = torch.tensor([[LEFT_CONTEXT, LEFT_CONTEXT, GAP_PREDICTOR, LEFT_CONTEXT, 1, CONTEXT]])
    positions = torch.tensor([[0, 1, 2, 6, 3, 7]])
    allowed = allowed_attention(roles, roles, positions, positions)[0, 0]
    assert allowed[2].tolist() == [True, True, True, True, False, True]  # all the context, no fill
    assert allowed[:, 2].tolist() == [False, False, True, False, True, True]  # the fill and CONTEXT read it
    assert allowed[3].tolist() == [True, True, False, True, False, False]  # left to right, the predictor hidden
