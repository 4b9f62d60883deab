"""Choosing the generate backend: torch, vLLM, or auto (vLLM when it imports)."""
from __future__ import annotations

import sys

from magnet.sampling import SamplingParams
from magnet.server.generation import GenerateBackend, TorchGenerateBackend, select_backend, spec_of
from magnet.server.settings import Settings


def test_torch_is_chosen_when_asked(tiny_engine):
    backend = select_backend(Settings(generate_backend="torch"), tiny_engine)
    assert isinstance(backend, TorchGenerateBackend) and isinstance(backend, GenerateBackend)


def test_auto_falls_back_to_torch_when_vllm_does_not_import(tiny_engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    assert select_backend(Settings(generate_backend="auto"), tiny_engine).name == "torch"


def test_vllm_gets_the_spec_of_what_the_engine_loaded(tiny_engine, tiny_model_dir):
    backend = select_backend(Settings(generate_backend="vllm", vllm_max_model_len=512), tiny_engine)
    assert backend.name == "vllm" and isinstance(backend, GenerateBackend)
    spec = spec_of(tiny_engine)
    assert backend.spec == spec and spec.model == str(tiny_model_dir) and spec.adapter is None
    assert (spec.device, spec.dtype) == ("cpu", "float32")


async def test_standalone_torch_backend_runs_on_its_own_worker(tiny_engine):
    backend = TorchGenerateBackend(tiny_engine)
    await backend.start()
    try:
        params = SamplingParams(max_tokens=5)
        whole = await backend.generate("The quick", params)
        pieces = [chunk async for chunk in backend.stream("The quick", params)]
        assert "".join(c.text for c in pieces) == whole.text == tiny_engine.generate("The quick", params).text
        assert pieces[-1].completion_tokens == whole.completion_tokens
    finally:
        await backend.close()


def test_other_models_are_vllm_loras_by_default_on_gpus_only():
    import types

    import torch

    from magnet.server.generation import loras_on_vllm

    def on(device: str):
        return types.SimpleNamespace(loaded=types.SimpleNamespace(device=torch.device(device)))

    assert loras_on_vllm(Settings(), on("cuda")) and not loras_on_vllm(Settings(), on("cpu"))
    assert loras_on_vllm(Settings(vllm_adapters="lora"), on("cpu"))
    assert not loras_on_vllm(Settings(vllm_adapters="torch"), on("cuda"))
