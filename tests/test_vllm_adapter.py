"""vLLM serves the adapter: a random LoRA on the embedded model, merged and cached, changes
greedy output to exactly what peft's merged model (the torch path) generates; another adapter
and the base, served beside it as LoRAs on the same engine, generate what they generate alone."""
from __future__ import annotations

import pytest

pytest.importorskip("vllm", exc_type=ImportError)

from test_vllm_backend import PROMPTS, LoopThread, Settings, exact_fp32  # noqa: E402
from test_vllm_merged import make_random_lora  # noqa: E402

from magnet.embedded import embedded_checkpoint  # noqa: E402
from magnet.loading import ModelSpec  # noqa: E402
from magnet.sampling import SamplingParams  # noqa: E402

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_tokens=16, temperature=0.0)


@pytest.fixture(scope="module")
def adapter_spec(tmp_path_factory):
    base = embedded_checkpoint()
    adapter = make_random_lora(base, tmp_path_factory.mktemp("lora") / "random-lora", seed=5, scale=0.15)
    return ModelSpec(model=str(base), adapter=str(adapter), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def other_adapter(adapter_spec, tmp_path_factory):
    return make_random_lora(adapter_spec.model, tmp_path_factory.mktemp("lora") / "other-lora", seed=6, scale=0.15)


@pytest.fixture(scope="module")
def running(adapter_spec, other_adapter, tmp_path_factory):
    from magnet.server.vllm_backend import VllmGenerateBackend

    cache = tmp_path_factory.mktemp("merged-cache")  # keep the user's cache clean
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("magnet.merged.cache_dir", lambda: cache)
        patch.setattr("magnet.lora_delta.cache_dir", lambda: cache)
        loop = LoopThread()
        backend = VllmGenerateBackend(Settings(), adapter_spec, "random",
                                      others={"other": other_adapter, "base": None})
        loop.run(backend.start())
        yield loop, backend
        loop.run(backend.close())
        loop.stop()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_adapter_output_equals_peft_merged(running, adapter_spec, prompt):
    from magnet.engine import Engine

    loop, backend = running
    assert backend.path.name.startswith("SmolLM2-135M-Instruct+random-lora-")
    got = loop.run(backend.generate(prompt, GREEDY))
    with_adapter = Engine.from_spec(adapter_spec, exact_fp32()).generate(prompt, GREEDY)  # peft merge_and_unload
    base_only = Engine.from_spec(ModelSpec(model=adapter_spec.model, adapter=None, device="cpu"),
                                 exact_fp32()).generate(prompt, GREEDY)
    assert got.text == with_adapter.text
    assert got.completion_tokens == with_adapter.completion_tokens
    assert got.text != base_only.text  # the adapter is really applied


@pytest.mark.parametrize("model_id", ["other", "base"])
def test_other_models_are_loras_on_the_same_engine(running, adapter_spec, other_adapter, model_id):
    from magnet.engine import Engine

    loop, backend = running
    adapter = {"other": str(other_adapter), "base": None}[model_id]
    alone = Engine.from_spec(ModelSpec(model=adapter_spec.model, adapter=adapter, device="cpu", dtype="float32"),
                             exact_fp32())
    for prompt in PROMPTS:
        got = loop.run(backend.for_model(model_id).generate(prompt, GREEDY))
        expected = alone.generate(prompt, GREEDY)
        assert got.text == expected.text and got.completion_tokens == expected.completion_tokens
    default = loop.run(backend.generate(PROMPTS[0], GREEDY))
    assert default.text != loop.run(backend.for_model(model_id).generate(PROMPTS[0], GREEDY)).text
