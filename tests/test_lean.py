"""The lean decoder (magnet/lean.py): what the Hugging Face forward computes, cache included,
for each architecture it takes; any other keeps the Hugging Face forward."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from magnet.engine import Engine, EngineConfig
from magnet.forward import hidden_states
from magnet.lean import LEAN_ATTRIBUTE, install_lean_decoder, lean_decoder_for
from magnet.loading import ModelSpec
from magnet.masks import CONTEXT, PAD, AttentionMode, roles_for_mode
from magnet.sampling import INFILL_DEFAULTS, SamplingParams

SIZES = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)
ARCHITECTURES = {
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**SIZES)),
    "llama, biased projections": lambda: LlamaForCausalLM(LlamaConfig(**SIZES, attention_bias=True)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**SIZES)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**SIZES)),
}


def model_of(name: str):
    torch.manual_seed(0)
    return ARCHITECTURES[name]().eval()


def prefill_then_steps(model, steps: int = 3) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Hidden states of a two-row prefill (one row padded; bidirectional context) and of
    `steps` decode steps of two tokens a row, and the cache's keys at the end."""
    from transformers import DynamicCache

    torch.manual_seed(1)
    ids = torch.randint(3, 64, (2, 6))
    padding = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    roles = roles_for_mode(AttentionMode.BIDIRECTIONAL, padding)
    positions = torch.arange(6).repeat(2, 1)
    cache = DynamicCache()
    outputs = []
    with torch.inference_mode():
        outputs.append(hidden_states(model, ids, roles, positions, cache))
        for step in range(steps):
            new_ids = torch.randint(3, 64, (2, 2))
            new_roles = torch.tensor([[1, 2], [1, PAD]])  # two spans in row 0, one in row 1
            new_positions = torch.full((2, 2), 6 + step)
            outputs.append(hidden_states(model, new_ids, new_roles, new_positions, cache, roles, positions))
            roles, positions = torch.cat([roles, new_roles], 1), torch.cat([positions, new_positions], 1)
    return outputs, [layer.keys.clone() for layer in cache.layers]


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_the_lean_forward_computes_what_the_hugging_face_forward_computes(architecture):
    model = model_of(architecture)
    want, want_keys = prefill_then_steps(model)
    assert install_lean_decoder(model)
    got, got_keys = prefill_then_steps(model)
    for mine, theirs in zip(got + got_keys, want + want_keys):
        assert mine.shape == theirs.shape
        assert torch.allclose(mine, theirs, atol=1e-5), (mine - theirs).abs().max()
    assert not torch.allclose(got[1], got[2], atol=1e-3)  # the steps differ: the check can fail


def test_forwards_without_a_cache_keep_the_hugging_face_forward():
    model = model_of("llama")
    install_lean_decoder(model)
    calls = []
    lean = getattr(model, LEAN_ATTRIBUTE)
    object.__setattr__(model, LEAN_ATTRIBUTE, lambda *args: calls.append(args) or lean(*args))
    ids = torch.randint(3, 64, (1, 5))
    roles = torch.full((1, 5), CONTEXT)
    with torch.inference_mode():
        hidden_states(model, ids, roles, torch.arange(5)[None])  # an embedding batch: no cache
        assert calls == []
        from transformers import DynamicCache

        hidden_states(model, ids, roles, torch.arange(5)[None], DynamicCache())
    assert len(calls) == 1


@pytest.mark.parametrize("change", ["activation", "layer class"])
def test_other_architectures_keep_the_hugging_face_forward(change):
    model = model_of("llama")
    if change == "activation":
        model.config.hidden_act = "gelu"
    else:
        model.model.layers[1] = torch.nn.Identity()  # not Llama's layer: nothing to reproduce
    assert lean_decoder_for(model) is None
    assert not install_lean_decoder(model)
    assert not hasattr(model, LEAN_ATTRIBUTE)


def test_an_engine_decodes_the_same_texts_with_and_without_it(tiny_model_dir):
    spec = ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float32")
    lean = Engine.from_spec(spec)
    plain = Engine.from_spec(spec, EngineConfig(lean_decode=False))
    assert hasattr(lean.model, LEAN_ATTRIBUTE) and not hasattr(plain.model, LEAN_ATTRIBUTE)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    for prompt in ["hello world", "the cat sat on"]:
        assert lean.generate(prompt, params).text == plain.generate(prompt, params).text
    story = ["the cat sat ", " on the mat"]
    assert lean.infill(story, INFILL_DEFAULTS).fills == plain.infill(story, INFILL_DEFAULTS).fills
