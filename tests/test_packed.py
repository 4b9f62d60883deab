"""oneDNN-packed linear layers (magnet/packed.py): the same outputs as nn.Linear, every linear
of a spec-built engine packed, the same greedy texts, and plain layers kept where packing fails."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import magnet.packed
from magnet.engine import Engine, EngineConfig
from magnet.loading import ModelSpec, load_model
from magnet.packed import PackedLinear, SharedInputLinears, SharedInputMember, pack_linears
from magnet.sampling import INFILL_DEFAULTS, SamplingParams


def onednn_packs_bf16() -> bool:
    """oneDNN's packed bf16 product needs AVX512 (BW/VL/DQ) or AVX-NE-CONVERT; other CPUs refuse it."""
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(8, 8, dtype=torch.bfloat16), 1)
    except RuntimeError:
        return False
    return True


BF16_PACKING = pytest.mark.skipif(not onednn_packs_bf16(), reason="this CPU has no oneDNN bf16 packed product")


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5),
                                              pytest.param(torch.bfloat16, 2e-2, marks=BF16_PACKING)])
@pytest.mark.parametrize("bias", [True, False])
def test_a_packed_layer_computes_what_the_linear_computes(dtype, tolerance, bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80, bias=bias).to(dtype)
    packed = PackedLinear(linear)
    for shape in [(1, 48), (5, 48), (2, 7, 48)]:  # one decode row, a few, a (B, T, H) prefill
        x = torch.randn(shape, dtype=dtype)
        want = F.linear(x, linear.weight, linear.bias)
        got = packed(x)
        assert got.shape == want.shape
        assert torch.allclose(got.float(), want.float(), atol=tolerance, rtol=tolerance)


def spec_of(model_dir, dtype="float32") -> ModelSpec:
    return ModelSpec(model=str(model_dir), adapter=None, device="cpu", dtype=dtype)


def linears(model) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("bias", [True, False])
def test_joined_projections_give_each_member_what_its_linear_gives(bias):
    torch.manual_seed(0)
    members = [torch.nn.Linear(48, width, bias=bias) for width in (48, 16, 16)]
    group = SharedInputLinears(members)
    joined = [SharedInputMember(group, i) for i in range(3)]
    x, other = torch.randn(2, 5, 48), torch.randn(2, 5, 48)
    with torch.inference_mode():
        for member, linear in zip(joined, members):  # one input for all: one product
            assert torch.allclose(member(x), linear(x), atol=1e-5)
        assert group._input is None  # nothing held once every member has read its output
        for member, linear, given in zip(joined, members, [x, other, x]):  # inputs differ: still right
            assert torch.allclose(member(given), linear(given), atol=1e-5)


def test_an_engine_built_from_a_spec_packs_every_linear_and_decodes_the_same_text(tiny_model_dir):
    plain = Engine.from_spec(spec_of(tiny_model_dir), EngineConfig(pack_linears=False))
    packed = Engine.from_spec(spec_of(tiny_model_dir), EngineConfig(pack_linears=True, join_projections=True))
    n = len(linears(plain.model))
    layers = plain.model.config.num_hidden_layers
    assert n > 0 and linears(packed.model) == []
    # q/k/v and gate/up of every layer joined into one product each; the rest packed one by one
    assert sum(isinstance(m, SharedInputLinears) for m in packed.model.modules()) == 2 * layers
    assert sum(isinstance(m, SharedInputMember) for m in packed.model.modules()) == 5 * layers
    assert sum(isinstance(m, PackedLinear) for m in packed.model.modules()) == n - 5 * layers + 2 * layers
    assert packed.vocab_size == plain.vocab_size  # the logits' width, read without a row-major weight

    params = SamplingParams(max_tokens=12, ignore_eos=True)
    for prompt in ["hello world", "the cat sat on"]:
        assert packed.generate(prompt, params).text == plain.generate(prompt, params).text
    story = ["the cat sat ", " on the mat"]
    assert packed.infill(story, INFILL_DEFAULTS).fills == plain.infill(story, INFILL_DEFAULTS).fills
    texts = ["a man plays a guitar", "the dog runs"]
    cosine = F.cosine_similarity(packed.embed(texts).embeddings, plain.embed(texts).embeddings)
    assert cosine.min() >= 0.9999


def test_projections_stay_separate_by_default(tiny_model_dir):
    separate = Engine.from_spec(spec_of(tiny_model_dir), EngineConfig(pack_linears=True))
    plain = Engine.from_spec(spec_of(tiny_model_dir), EngineConfig(pack_linears=False))
    assert not any(isinstance(m, (SharedInputLinears, SharedInputMember)) for m in separate.model.modules())
    assert sum(isinstance(m, PackedLinear) for m in separate.model.modules()) == len(linears(plain.model))
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    assert separate.generate("hello world", params).text == plain.generate("hello world", params).text


@pytest.mark.parametrize("dtype, packed", [("float32", False), pytest.param("bfloat16", True, marks=BF16_PACKING)])
def test_an_engine_packs_by_default_only_where_packing_pays(tiny_model_dir, dtype, packed):
    """bf16 packed, fp32 plain (magnet.packed.PACKED_BY_DEFAULT: in fp32 packing slowed
    embedding batches); pack_linears=True packs fp32 too."""
    engine = Engine.from_spec(spec_of(tiny_model_dir, dtype))
    assert any(isinstance(m, PackedLinear) for m in engine.model.modules()) == packed
    assert (len(linears(engine.model)) == 0) == packed
    forced = Engine.from_spec(spec_of(tiny_model_dir, "float32"), EngineConfig(pack_linears=True))
    assert len(linears(forced.model)) == 0


def test_packing_is_refused_where_it_cannot_hold(tiny_model_dir):
    half = load_model(spec_of(tiny_model_dir, "float16"))  # no packed fp16 kernel on CPU
    assert pack_linears(half.model) == 0
    assert len(linears(half.model)) > 0


@pytest.mark.parametrize("fault", ["raises", "disagrees"])
def test_layers_stay_plain_when_onednn_refuses_or_disagrees(tiny_model_dir, monkeypatch, fault):
    def broken(self, x):
        if fault == "raises":
            raise RuntimeError("could not create a primitive descriptor for the inner product")
        return torch.zeros(*x.shape[:-1], self.out_features, dtype=x.dtype)

    monkeypatch.setattr(magnet.packed.PackedLinear, "forward", broken)
    loaded = load_model(spec_of(tiny_model_dir))
    before = len(linears(loaded.model))
    assert pack_linears(loaded.model) == 0
    assert len(linears(loaded.model)) == before
