"""Which dtype each path runs: the one rule (magnet.hardware.default_dtype) reaches the torch
engine and vLLM alike, --dtype overrides both, and the API and /metrics say what runs."""
from __future__ import annotations

import pytest
import torch

import magnet.hardware
from magnet.loading import ModelSpec, load_model
from magnet.server.settings import Settings
from magnet.server.testing import app_with, running_app
from magnet.server.vllm_backend import engine_args


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_a_model_loads_in_bf16_only_where_the_cpu_multiplies_it_natively(tiny_model_dir, monkeypatch,
                                                                         native, expected):
    monkeypatch.setattr(magnet.hardware, "cpu_has_native_bf16", lambda: native)
    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu"))
    assert loaded.dtype == expected
    pinned = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float16"))
    assert pinned.dtype == torch.float16


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_vllm_follows_the_same_rule_and_dtype_overrides_it(tmp_path, monkeypatch, native, expected):
    monkeypatch.setattr(magnet.hardware, "cpu_has_native_bf16", lambda: native)
    unset = ModelSpec(device="cpu")
    assert engine_args(tmp_path, "m", Settings(), unset).dtype == expected
    assert engine_args(tmp_path, "m", Settings(dtype="float32"), unset).dtype == "float32"  # --dtype
    assert engine_args(tmp_path, "m", Settings(), ModelSpec(dtype="bfloat16")).dtype == "bfloat16"


async def test_models_and_metrics_say_which_dtype_each_backend_runs(tiny_engine):
    from test_server_metrics import scrape, value

    async with running_app(app_with(tiny_engine)) as http:
        cards = (await http.get("/v1/models")).json()["data"]
        table = await scrape(http)
    assert cards[0]["dtypes"] == {"torch": "float32"}  # the tiny fixture is pinned to float32
    assert value(table, "magnet_model_dtype", model=tiny_engine.name, backend="torch", dtype="float32") == 1


# ---- parity on the embedded model: bf16 against fp32 ---------------------------------------

PARITY_TEXTS = ["A man is playing a guitar.", "The cat sat on the mat.", "Stocks fell sharply on Monday.",
                "She is cooking dinner for her family.", "A dog runs through the snow."]
PARITY_PROMPTS = ["The capital of France is", "Once upon a time, in a small village,",
                  "The best way to learn a language is", "Here is a list of fruits:"]
PARITY_STORIES = [["Tom wanted a dog for his birthday. ", " He named the puppy Max and walked him every day."],
                  ["Anna studied hard for her math test. ", " She got the best grade in her class."],
                  ["The power went out during the storm. ", " When the lights came back, everyone cheered."],
                  ["Jake forgot his lunch at home. ", " His friend shared a sandwich with him."]]
# Greedy decoding in bf16 may pick another token only where fp32's two best logits nearly tie:
# measured, every disagreement had a top-2 gap under 0.13 (logit units); 0.25 leaves room.
CLEAR_MARGIN = 0.25


@pytest.fixture(scope="module")
def fp32_and_bf16():
    from magnet.engine import Engine, EngineConfig
    from magnet.narrow import Tiers

    # fp32 throughout: no bf16 copies for narrow products (magnet/narrow.py)
    return (Engine.from_spec(ModelSpec(device="cpu", dtype="float32"), EngineConfig(narrow_tiers=Tiers())),
            Engine.from_spec(ModelSpec(device="cpu", dtype="bfloat16")))


@pytest.mark.slow
def test_bf16_embeddings_and_greedy_choices_match_fp32(fp32_and_bf16):
    fp32, bf16 = fp32_and_bf16
    cosine = torch.nn.functional.cosine_similarity(fp32.embed(PARITY_TEXTS).embeddings,
                                                   bf16.embed(PARITY_TEXTS).embeddings)
    assert cosine.min() >= 0.999
    from magnet.sampling import SamplingParams

    with torch.inference_mode():
        for prompt in PARITY_PROMPTS:  # fp32's greedy text, read by both: same choice wherever it is clear
            ids = fp32.prompt_ids(prompt, SamplingParams())
            text = torch.tensor([ids + fp32.tokens(fp32.generate(prompt, SamplingParams(max_tokens=32)).text)])
            reference = fp32.model(text).logits[0, len(ids) - 1:-1]  # (T, V): what predicts each new token
            choices = bf16.model(text).logits[0, len(ids) - 1:-1].argmax(-1)
            best = reference.topk(2, dim=-1).values
            clear = best[:, 0] - best[:, 1] >= CLEAR_MARGIN
            assert clear.sum() >= len(clear) // 2
            assert (choices == reference.argmax(-1))[clear].all(), prompt


@pytest.mark.slow
def test_bf16_greedy_infills_mostly_equal_fp32_texts(fp32_and_bf16):
    """Measured: 3 of these 4 fills are equal on a CPU with AVX512-BF16 (the other differs from its
    first token, a near tie), 2 of 4 on an AVX2 CPU, where bf16 products are emulated and unpacked."""
    from dataclasses import replace

    from magnet.sampling import INFILL_DEFAULTS

    fp32, bf16 = fp32_and_bf16
    params = replace(INFILL_DEFAULTS, max_tokens=24)
    equal = [fp32.infill(story, params).fills == bf16.infill(story, params).fills for story in PARITY_STORIES]
    assert sum(equal) >= 2, equal
