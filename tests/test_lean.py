"""The lean decoder (magnet/lean.py): what the Hugging Face forward computes, cache included,
for each architecture it takes; any other keeps the Hugging Face forward."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from magnet.engine import Engine, EngineConfig
from magnet.kv_cache import GrowingCache
from magnet.forward import encode_last_token, hidden_states, layer_states
from magnet import lean as lean_module
from magnet.lean import LEAN_ATTRIBUTE, install_lean_decoder, lean_decoder_for
from magnet.loading import ModelSpec
from magnet.masks import PAD, AttentionMode, positions_from_padding, roles_for_mode
from magnet.packed import PackedLinear
from magnet.tagging.words import join_words
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


def prefill_then_steps(model, steps: int = 3, cache_class=DynamicCache) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Hidden states of a two-row prefill (one row padded; bidirectional context) and of
    `steps` decode steps of two tokens a row, and the cache's keys at the end."""
    torch.manual_seed(1)
    ids = torch.randint(3, 64, (2, 6))
    padding = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    roles = roles_for_mode(AttentionMode.BIDIRECTIONAL, padding)
    positions = torch.arange(6).repeat(2, 1)
    cache = cache_class()
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
@pytest.mark.parametrize("encoder", ["eager", "compiled"])  # compiled: the prefill runs the compiled layers
@pytest.mark.parametrize("attention", ["folded", "grouped"])  # grouped: SDPA's enable_gqa, for wide queries
@pytest.mark.parametrize("cache_class", [DynamicCache, GrowingCache])
def test_the_lean_forward_computes_what_the_hugging_face_forward_computes(architecture, encoder, attention,
                                                                           cache_class, monkeypatch):
    model = model_of(architecture)
    want, want_keys = prefill_then_steps(model)  # the Hugging Face forward, transformers' own cache
    assert install_lean_decoder(model, compile_encoder=encoder == "compiled")
    if attention == "grouped":  # every eager layer's query is wider than this
        monkeypatch.setattr(lean_module, "FOLDED_QUERY_MAX_WIDTH", 0)
    got, got_keys = prefill_then_steps(model, cache_class=cache_class)
    for mine, theirs in zip(got + got_keys, want + want_keys):
        assert mine.shape == theirs.shape
        assert torch.allclose(mine, theirs, atol=1e-5), (mine - theirs).abs().max()
    assert not torch.allclose(got[1], got[2], atol=1e-3)  # the steps differ: the check can fail


def cacheless_forwards(model) -> list[torch.Tensor]:
    """Hidden states of forwards without a cache: a padded bidirectional batch, a causal one,
    and one row alone (the shapes the compiled encoder specialises)."""
    torch.manual_seed(2)
    ids = torch.randint(3, 64, (3, 7))
    padding = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    positions = positions_from_padding(padding)
    with torch.inference_mode():
        return [hidden_states(model, ids, roles_for_mode(mode, padding), positions) * padding[..., None]
                for mode in (AttentionMode.BIDIRECTIONAL, AttentionMode.CAUSAL)] + [
            hidden_states(model, ids[:1], roles_for_mode(AttentionMode.BIDIRECTIONAL, padding[:1]), positions[:1])]


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("encoder", ["eager", "compiled", "wider than folded attention"])
def test_forwards_without_a_cache_compute_what_the_hugging_face_forward_computes(architecture, encoder, monkeypatch):
    model = model_of(architecture)
    want = cacheless_forwards(model)
    assert install_lean_decoder(model, compile_encoder=encoder != "eager")
    lean = getattr(model, LEAN_ATTRIBUTE)
    assert (lean.compiled_layer is None) == (encoder == "eager")
    if encoder == "wider than folded attention":  # compiled, but these take the eager layers
        monkeypatch.setattr(lean_module, "FOLDED_ATTENTION_MAX_WIDTH", 4)
    got = cacheless_forwards(model)
    for mine, theirs in zip(got, want):
        assert mine.shape == theirs.shape
        assert torch.allclose(mine, theirs, atol=1e-5), (mine - theirs).abs().max()
    assert not torch.allclose(got[0], got[1], atol=1e-3)  # bidirectional and causal differ: the check can fail


def outputs_after(model, layers: list[int]) -> list[torch.Tensor]:
    """layer_states after `layers` of a padded bidirectional batch."""
    torch.manual_seed(3)
    ids = torch.randint(3, 64, (2, 5))
    padding = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    with torch.inference_mode():
        return [state * padding[..., None] for state in layer_states(
            model, ids, roles_for_mode(AttentionMode.BIDIRECTIONAL, padding), positions_from_padding(padding), layers)]


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("decoder", ["hugging face", "lean", "lean, compiled"])
def test_the_outputs_after_a_layer_are_those_of_the_model_cut_after_it(architecture, decoder):
    """A middle layer's outputs (what a tagger may read) are the final outputs of the same model
    with the later layers removed: the final norm applied, nothing after that layer run."""
    import copy

    model = model_of(architecture)
    cut = copy.deepcopy(model)
    cut.get_decoder().layers = cut.get_decoder().layers[:1]
    cut.config.num_hidden_layers = 1
    want = outputs_after(cut, [1]) + outputs_after(model, [2])
    if decoder != "hugging face":
        assert install_lean_decoder(model, compile_encoder=decoder == "lean, compiled")
    got = outputs_after(model, [1, 2])
    for mine, theirs in zip(got, want):
        assert torch.allclose(mine, theirs, atol=1e-5), (mine - theirs).abs().max()
    assert not torch.allclose(got[0], got[1], atol=1e-3)  # two layers, two outputs: the check can fail


@pytest.mark.parametrize("architecture", ["llama", "llama, biased projections", "qwen2"])
@pytest.mark.parametrize("encoder", ["eager", "compiled"])
@pytest.mark.parametrize("mode", [AttentionMode.BIDIRECTIONAL, AttentionMode.CAUSAL])
def test_a_pooled_forward_computes_the_last_columns_the_full_forward_computes(architecture, encoder, mode):
    """encode_last_token through the lean decoder runs the last layer for the pooled column
    only (LeanDecoder.outputs_at); its vectors are the full forward's at each row's last token."""
    model = model_of(architecture)
    torch.manual_seed(4)
    seqs = [torch.randint(3, 64, (n,)).tolist() for n in (7, 4, 1, 6)]  # right-padded rows of every width
    with torch.inference_mode():
        want = encode_last_token(model, seqs, 0, "cpu", mode)
        assert install_lean_decoder(model, compile_encoder=encoder == "compiled")
        got = encode_last_token(model, seqs, 0, "cpu", mode)
    assert got.shape == want.shape == (4, SIZES["hidden_size"])
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert not torch.allclose(got[0], got[3], atol=1e-3)  # rows differ: the check can fail


def test_compiling_fails_softly_and_keeps_the_eager_layers(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    model = model_of("llama")
    monkeypatch.setattr(torch, "compile", lambda fn, **options: broken)
    assert install_lean_decoder(model, compile_encoder=True)
    assert getattr(model, LEAN_ATTRIBUTE).compiled_layer is None
    assert "no C++ compiler found" in caplog.text


def test_joined_projections_are_not_compiled(tiny_model_dir):
    spec = ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float32")
    joined = Engine.from_spec(spec, EngineConfig(pack_linears=True, join_projections=True))
    assert getattr(joined.model, LEAN_ATTRIBUTE).compiled_layer is None


def test_an_engine_embeds_the_same_vectors_with_the_compiled_packed_encoder(tiny_model_dir):
    """Packed linears inside compiled layers run as magnet::packed_product (magnet/packed.py)."""
    spec = ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float32")
    compiled = Engine.from_spec(spec, EngineConfig(pack_linears=True))
    plain = Engine.from_spec(spec, EngineConfig(lean_decode=False, pack_linears=False))
    assert getattr(compiled.model, LEAN_ATTRIBUTE).compiled_layer is not None
    assert isinstance(compiled.model.get_decoder().layers[0].mlp.down_proj, PackedLinear)
    texts = ["hello world", "the cat sat on the mat", "a"]
    want = plain.embed(texts).embeddings
    assert torch.allclose(compiled.embed(texts).embeddings, want, atol=1e-5)
    assert torch.allclose(compiled.embed(texts[:1]).embeddings, want[:1], atol=1e-5)
    texts, spans = map(list, zip(*map(join_words, [["the", "cat"], ["sat", "on", "a", "mat"]])))
    for mine, theirs in zip(compiled.paired_token_states(texts, spans), plain.paired_token_states(texts, spans)):
        assert mine.shape == theirs.shape
        assert torch.allclose(mine, theirs, atol=1e-5)


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
    lean = Engine.from_spec(spec, EngineConfig(compile_encoder=False))
    plain = Engine.from_spec(spec, EngineConfig(lean_decode=False))
    assert hasattr(lean.model, LEAN_ATTRIBUTE) and not hasattr(plain.model, LEAN_ATTRIBUTE)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    for prompt in ["hello world", "the cat sat on"]:
        assert lean.generate(prompt, params).text == plain.generate(prompt, params).text
    story = ["the cat sat ", " on the mat"]
    assert lean.infill(story, INFILL_DEFAULTS).fills == plain.infill(story, INFILL_DEFAULTS).fills
