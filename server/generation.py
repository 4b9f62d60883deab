"""Generation backends behind /v1/generate and /v1/completions.

    backend = select_backend(settings, engine, worker)   # "vllm" | "torch" | "auto"
    await backend.start()
    completion = await backend.generate("Once upon a time", SamplingParams(max_tokens=32))
    async for chunk in backend.stream(prompt, params): ...  # closing early cancels

The torch backend runs the engine's own causal decoding in the model worker's
running batch, next to infill rows (continuous batching, server/worker.py). The
vLLM backend (server/vllm_backend.py) runs vLLM's async engine on the same base
model with the adapter merged; it is imported only when chosen. Named adapters
(and the base served beside them) are LoRAs per request on that one vLLM engine,
or, with `vllm_adapters` "torch", generate on the torch backend of their own engine.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from magnet.sampling import Completion, SamplingParams, StreamChunk, completion_of
from magnet.server.settings import Settings
from magnet.server.work import GenerateWork
from magnet.server.worker import ModelWorker

if TYPE_CHECKING:
    from pathlib import Path

    from magnet.engine import Engine
    from magnet.loading import ModelSpec

log = logging.getLogger(__name__)


@runtime_checkable
class GenerateBackend(Protocol):
    name: str  # "torch" | "vllm"

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def max_model_len(self) -> int:
        """What a prompt plus its completion may take."""
        ...

    async def generate(self, prompt: str, params: SamplingParams, ids: list[int] | None = None) -> Completion: ...

    def stream(self, prompt: str, params: SamplingParams, ids: list[int] | None = None) -> AsyncIterator[StreamChunk]:
        """Chunks as decoded; the last has finish_reason and usage. Closing it early cancels.
        `ids`: the prompt already tokenized and checked (the service does it once, off the event
        loop); None: the backend tokenizes `prompt` itself (standalone use)."""
        ...


class TorchGenerateBackend:
    """Generations as rows of the model worker's running decode batch."""

    name = "torch"

    def __init__(self, engine: "Engine", worker: ModelWorker | None = None, model: str | None = None):
        self.engine = engine
        self.worker = worker
        self.model = engine.name if model is None else model  # the served id: names its running batch
        self._own_worker = worker is None  # standalone use (benchmarks): a private worker thread

    async def start(self) -> None:
        if self._own_worker:
            self.worker = ModelWorker(max_queue=256, max_batch_tokens=8192, max_wait_s=0.0)
            self.worker.start()

    async def close(self) -> None:
        if self._own_worker and self.worker is not None:
            await self.worker.close()

    @property
    def max_model_len(self) -> int:
        return self.engine.max_length

    async def generate(self, prompt: str, params: SamplingParams, ids: list[int] | None = None) -> Completion:
        """The stream, gathered: a caller that leaves stops the decode at its next token."""
        return completion_of([chunk async for chunk in self.stream(prompt, params, ids)])

    async def stream(self, prompt: str, params: SamplingParams,
                     ids: list[int] | None = None) -> AsyncIterator[StreamChunk]:
        engine = self.engine
        # tokenized and checked once: the ids the prefill encodes, priced as its tokens (its KV
        # share adds max_tokens)
        if ids is None:
            ids = await self.worker.tokenize("generate", lambda: engine.prompt_ids(prompt, params))
        async for chunk in self.worker.stream_work(GenerateWork(engine, self.model, ids, params)):
            yield chunk


def vllm_importable() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install (torchvision ops, torchcodec)
        log.info("vLLM is not usable here (%s: %s)", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return False
    return True


def spec_of(engine: "Engine") -> "ModelSpec":
    """The ModelSpec of what the engine has loaded, for a second backend to load the same weights."""
    from magnet.loading import ModelSpec

    loaded = engine.loaded
    adapter = str(loaded.adapter_path) if loaded.adapter_path is not None else None
    dtype = str(loaded.dtype).removeprefix("torch.")
    return ModelSpec(model=str(loaded.base_path), adapter=adapter, device=loaded.device.type, dtype=dtype)


def select_backend(settings: Settings, engine: "Engine", worker: ModelWorker | None = None,
                   others: dict[str, "Path | None"] | None = None) -> GenerateBackend:
    """The backend `settings.generate_backend` asks for; "auto" = vLLM when it imports, else torch.
    `others` ({served id: adapter dir, None = the base}) become LoRAs on a vLLM engine."""
    choice = settings.generate_backend
    if choice == "auto":
        choice = "vllm" if vllm_importable() else "torch"
        log.info("generate backend: %s (auto)", choice)
    if choice == "torch":
        return TorchGenerateBackend(engine, worker)
    from magnet.server.vllm_backend import VllmGenerateBackend

    return VllmGenerateBackend(settings, spec_of(engine), engine.name, others)  # one public name, the engine's


def loras_on_vllm(settings: Settings, default: "Engine") -> bool:
    """Whether other models generate as LoRAs on the vLLM engine. On CPU, an engine with LoRA
    layers runs every request (the default's too) ~3x slower at 8 streams, and the torch
    backend is faster for the adapters themselves (bench/bench_lora.py): auto = GPUs only."""
    if settings.vllm_adapters == "auto":
        return default.loaded.device.type != "cpu"
    return settings.vllm_adapters == "lora"


def generate_backends(settings: Settings, engines: dict[str, "Engine"], default: "Engine",
                      worker: ModelWorker) -> dict[str, GenerateBackend]:
    """{served id: its generate backend}. The default's is `select_backend`'s; with vLLM and
    `settings.vllm_adapters` "lora", every other model is a LoRA on that engine, else each one
    generates on the torch backend of its own engine (see `loras_on_vllm`)."""
    others = {model_id: engine for model_id, engine in engines.items() if engine is not default}
    as_loras = loras_on_vllm(settings, default)
    adapters = {model_id: engine.loaded.adapter_path for model_id, engine in others.items()}
    backend = select_backend(settings, default, worker, adapters if as_loras else None)
    backends = {default.name: backend}
    for model_id, engine in others.items():
        backends[model_id] = (backend.for_model(model_id) if backend.name == "vllm" and as_loras
                              else TorchGenerateBackend(engine, worker, model_id))
    return backends
