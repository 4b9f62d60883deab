"""Generation on vLLM's async engine, in-process, on the base model with the adapter merged.

    backend = VllmGenerateBackend(settings, ModelSpec())
    await backend.start()                    # merge once (cached), start the engine, warm up
    await backend.generate("Once upon a time", SamplingParams(max_tokens=32))
    async for chunk in backend.stream(prompt, params): ...   # closing early aborts in vLLM
    await backend.close()

Other models on the same base (named adapters, the base itself) are LoRAs chosen per
request on that one engine (vLLM's multi-LoRA): each is the exact difference between
its weights and the merged default's (magnet/lora_delta.py).

    backend = VllmGenerateBackend(settings, spec, "default", others={"legal": Path("/ckpt/legal"), "base": None})
    backend.for_model("legal")               # a GenerateBackend whose requests carry legal's LoRA

`AsyncLLM` keeps tokenizing, detokenizing and its Prometheus metrics (`vllm:*`,
in prometheus_client's default registry, so the server's /metrics shows them) in
this process; the model runs in vLLM's engine-core and worker processes, which
vLLM starts with `spawn` on CPU. Spawned children re-import `__main__`, so the
process that starts the engine must be a module entry point or guarded by
`if __name__ == "__main__"` (`magnet serve`, uvicorn and pytest are).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from magnet.errors import BackendError, InvalidInputError, MagnetError, NotReadyError
from magnet.hardware import default_dtype, dtype_name
from magnet.limits import prompt_token_ids
from magnet.loading import ModelSpec, load_tokenizer, resolve_adapter_path
from magnet.lora_delta import adapter_rank, delta_adapter
from magnet.merged import merged_checkpoint
from magnet.sampling import Completion, SamplingParams, StreamChunk, TokenLogprob, completion_of

if TYPE_CHECKING:
    from magnet.server.generation import GenerateBackend

log = logging.getLogger(__name__)

GIB = 1 << 30

# Set before vLLM is imported; a value already in the environment wins.
VLLM_ENVIRONMENT = {
    "VLLM_NO_USAGE_STATS": "1",  # no usage report to stats.vllm.ai
    "VLLM_DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",  # the checkpoint is a local directory: never reach the hub
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",  # the CPU worker may use every core
}


def prepare_environment() -> None:
    for key, value in VLLM_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        log.warning("PROMETHEUS_MULTIPROC_DIR is set: vLLM's metrics go to that directory, "
                    "not to this process's /metrics")


def engine_args(path: Path, name: str | None, settings, spec: ModelSpec, lora_ranks: list[int] = ()):
    """AsyncEngineArgs for the merged checkpoint, with safe CPU defaults; with `lora_ranks`
    (one per LoRA served beside it), multi-LoRA sized for all of them at once."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform

    dtype = spec.dtype or getattr(settings, "dtype", None)
    if dtype is None:  # the torch engine's rule: bf16 where the CPU has it natively, else fp32
        dtype = dtype_name(default_dtype(torch.device("cpu"))) if current_platform.is_cpu() else "auto"
    kv_cache_gb = getattr(settings, "vllm_kv_cache_gb", 1.0)
    memory_share = getattr(settings, "vllm_gpu_memory_utilization", None)
    # Big models: unset, each is vLLM's own default (one device, no quantization).
    big_model = {"tensor_parallel_size": getattr(settings, "vllm_tensor_parallel_size", 1),
                 "pipeline_parallel_size": getattr(settings, "vllm_pipeline_parallel_size", 1),
                 "quantization": getattr(settings, "vllm_quantization", None)}
    if memory_share is not None:
        big_model["gpu_memory_utilization"] = memory_share
    loras = {}
    if lora_ranks:  # every LoRA resident: a request never waits for one to load
        loras = {"enable_lora": True, "max_lora_rank": lora_rank_bound(max(lora_ranks)),
                 "max_loras": len(lora_ranks), "max_cpu_loras": len(lora_ranks)}
    return AsyncEngineArgs(
        model=str(path),
        served_model_name=name,
        dtype=dtype,
        max_model_len=getattr(settings, "vllm_max_model_len", 2048),
        # = VLLM_CPU_KVCACHE_SPACE, which only takes whole GiB; on GPU it replaces
        # gpu_memory_utilization, unless that is given (vLLM then sizes the KV cache).
        kv_cache_memory_bytes=None if memory_share is not None else int(kv_cache_gb * GIB),
        enforce_eager=True,  # starts in ~25 s instead of ~135 s; compile cache is not reused
        disable_log_stats=False,  # keeps the Prometheus stat logger (vllm:* metrics)
        seed=0,
        **big_model,
        **loras,
    )


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed max_lora_rank values


def lora_rank_bound(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank`."""
    for bound in VLLM_LORA_RANKS:
        if rank <= bound:
            return bound
    raise ValueError(f"a LoRA of rank {rank} is above vLLM's limit ({VLLM_LORA_RANKS[-1]}): "
                     "serve that adapter with --generate-backend torch")


# vLLM starts its engine processes with multiprocessing's "spawn" (always, on CPU). They are
# started through this launcher, which puts each in a process group of its own first: a stop
# signal sent to the server's whole group (Ctrl-C, systemd, a shell entrypoint) then reaches
# only the server, which drains in-flight requests and stops the engine itself. In the
# server's group, the engine processes died at once and every in-flight generation failed.
# Out of the group, they must still die with the server if it is killed outright: on Linux
# the kernel sends them SIGKILL when the server thread that started them ends (PR_SET_PDEATHSIG,
# kept across exec; that thread is an executor thread that lives as long as the server).
OWN_GROUP_LAUNCHER = """#!{python}
import os, signal, sys
os.setpgid(0, 0)
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != {server_pid}:
    sys.exit("the server is gone")
os.execv({python!r}, [{python!r}] + sys.argv[1:])
"""


@contextlib.contextmanager
def engine_processes_in_own_group():
    """While vLLM starts: spawned processes run through OWN_GROUP_LAUNCHER."""
    import multiprocessing.spawn
    import sys

    previous = multiprocessing.spawn.get_executable()
    with tempfile.TemporaryDirectory(prefix="magnet-spawn-") as folder:
        launcher = Path(folder) / "python"
        launcher.write_text(OWN_GROUP_LAUNCHER.format(python=sys.executable, server_pid=os.getpid()))
        launcher.chmod(0o755)
        multiprocessing.spawn.set_executable(str(launcher))
        try:
            yield
        finally:
            multiprocessing.spawn.set_executable(previous)


def shutdown_engine(engine) -> None:
    """Stop vLLM's engine-core and worker processes (blocks up to ~5 s)."""
    engine.shutdown()
    # AsyncLLM.__del__ calls shutdown again, at interpreter exit when vLLM's module
    # globals are already gone (a TypeError on stderr): once is enough.
    engine.shutdown = lambda timeout=None: None


def finish_reason(vllm_reason: str | None) -> str:
    """vLLM's "stop" (EOS or stop string), "length", "abort" -> ours ("stop" | "length")."""
    return "length" if vllm_reason == "length" else "stop"


class VllmGenerateBackend:
    name = "vllm"

    def __init__(self, settings, spec: ModelSpec = ModelSpec(), name: str | None = None,
                 others: dict[str, Path | None] | None = None):
        self.settings = settings
        self.spec = spec
        self.name_served = name  # the public model id (the engine's); None: vLLM names it by its path
        self.others = dict(others or {})  # served id -> its adapter dir (None: the base), as LoRAs
        self.max_model_len: int = getattr(settings, "vllm_max_model_len", 2048)
        self.engine = None  # vllm.v1.engine.async_llm.AsyncLLM once started
        self.tokenizer = None
        self.path: Path | None = None
        self.loras: dict[str, object] = {}  # served id -> vllm LoRARequest, once started
        self.died = False  # a request found the engine dead (before vLLM's own flag may say so)

    # ---- life cycle ----------------------------------------------------------

    async def start(self) -> None:
        """Merge (once, cached), start vLLM's engine processes and run one token."""
        prepare_environment()
        # The merge and the engine start block for seconds: keep the event loop free.
        self.path = await asyncio.to_thread(merged_checkpoint, self.spec)
        self.tokenizer = await asyncio.to_thread(load_tokenizer, self.path)
        self.loras = await asyncio.to_thread(self.lora_requests)
        self.engine = await asyncio.to_thread(self.build_engine, self.path)
        self.died = False
        await self.generate("Hello", SamplingParams(max_tokens=1))  # warm up; starts the output loop
        for model_id in self.loras:  # loads each LoRA now, not on its first request
            await self.generate("Hello", SamplingParams(max_tokens=1), model_id=model_id)
        log.info("vLLM engine ready on %s (%s, max_model_len %d, LoRAs: %s)", self.path, self.dtype,
                 self.max_model_len, ", ".join(self.loras) or "none")

    @property
    def dtype(self) -> str | None:
        """The dtype vLLM runs the model in ("bfloat16"), once started."""
        return dtype_name(self.engine.model_config.dtype) if self.engine is not None else None

    def lora_requests(self) -> dict[str, object]:
        """{served id: LoRARequest} of the difference LoRAs (written once, cached)."""
        from vllm.lora.request import LoRARequest

        merged_adapter = resolve_adapter_path(self.spec.adapter)
        if self.others and merged_adapter is None:
            raise ValueError("serving named adapters through vLLM needs the default model to have an adapter")
        return {model_id: LoRARequest(model_id, number, str(delta_adapter(merged_adapter, adapter)))
                for number, (model_id, adapter) in enumerate(self.others.items(), start=1)}

    def build_engine(self, path: Path):
        from vllm.v1.engine.async_llm import AsyncLLM

        ranks = [adapter_rank(Path(lora.lora_path)) for lora in self.loras.values()]
        with engine_processes_in_own_group():
            return AsyncLLM.from_engine_args(engine_args(path, self.name_served, self.settings, self.spec, ranks))

    def for_model(self, model_id: str) -> "GenerateBackend":
        """The backend that serves `model_id`: this one for the default, a LoRA view otherwise."""
        if model_id == self.name_served:
            return self
        if model_id not in self.others:
            raise KeyError(f"{model_id!r} is not served by this vLLM engine")
        return VllmLoraView(self, model_id)

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(shutdown_engine, engine)

    def problem(self) -> str | None:
        """Why this backend cannot serve now (its engine process died), or None."""
        if self.died or self.engine is not None and self.engine.errored:
            return "the vLLM engine process died"
        return None

    async def restart(self) -> None:
        """Stop what is left of the engine and start a new one (the merged checkpoint is cached)."""
        try:
            await self.close()
        except Exception:  # a dead engine may fail its own shutdown: the new one matters
            log.exception("stopping the dead vLLM engine failed")
        await self.start()

    # ---- requests --------------------------------------------------------------

    async def generate(self, prompt: str, params: SamplingParams, ids: list[int] | None = None,
                       model_id: str | None = None) -> Completion:
        return completion_of([chunk async for chunk in self.stream(prompt, params, ids, model_id)])

    async def stream(self, prompt: str, params: SamplingParams, ids: list[int] | None = None,
                     model_id: str | None = None) -> AsyncIterator[StreamChunk]:
        """Text deltas as vLLM decodes them; the last chunk has finish_reason and usage.
        `ids`: the prompt tokenized and checked already (by the service); None: tokenized here.
        `model_id` names another served model (its LoRA); None or the default's: merged weights.

        Closing this generator early (client gone) closes vLLM's, which aborts the request.
        """
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if ids is None:
            ids = self.prompt_ids(prompt, params)
        outputs = self.running_engine().generate(
            TokensPrompt(prompt_token_ids=ids),
            vllm_params(params, RequestOutputKind.DELTA),
            request_id=uuid.uuid4().hex,
            lora_request=self.loras.get(model_id) if model_id is not None else None,
        )
        generated = 0
        try:
            async for output in outputs:
                piece = output.outputs[0]
                generated += len(piece.token_ids)  # DELTA: only this step's tokens
                logprobs = None if params.logprobs is None else token_logprobs(piece.token_ids, piece.logprobs, params.logprobs)
                prompt_logprobs = None
                if output.prompt_logprobs and params.prompt_logprobs is not None:  # the first output only
                    prompt_logprobs = token_logprobs(ids, output.prompt_logprobs, params.prompt_logprobs)
                if piece.finish_reason is not None:  # the last output: vLLM's generator ends after it
                    # (a final EOS is in its token ids and logprobs, and so in the usage, not the text)
                    if params.max_tokens == 0:  # echo only: the one token vLLM had to make is dropped
                        yield StreamChunk("", "length", len(ids), 0, logprobs=None if logprobs is None else [],
                                          prompt_logprobs=prompt_logprobs)
                        continue
                    yield StreamChunk(piece.text, finish_reason(piece.finish_reason), len(ids), generated,
                                      logprobs=logprobs, prompt_logprobs=prompt_logprobs)
                elif piece.text or logprobs or prompt_logprobs:
                    yield StreamChunk(piece.text, logprobs=logprobs, prompt_logprobs=prompt_logprobs)
        except MagnetError:
            raise
        except Exception as exc:
            error = backend_error(exc)
            self.died = self.died or isinstance(error, NotReadyError)  # /ready says so at once
            raise error from exc
        finally:
            await outputs.aclose()  # no-op when finished; aborts the request in vLLM otherwise

    def running_engine(self):
        if self.engine is None:
            raise NotReadyError("the vLLM engine is not running: wait for /ready")
        return self.engine

    def prompt_ids(self, prompt: str, params: SamplingParams) -> list[int]:
        """Tokenize and check exactly as the torch path does (magnet/limits.py)."""
        return prompt_token_ids(self.tokenizer, prompt, params, self.max_model_len)


class VllmLoraView:
    """Another served model on the same vLLM engine: its requests carry its LoRA. The engine's
    life cycle (start, close, restart, health) belongs to the default's backend."""

    name = "vllm"

    def __init__(self, engine_backend: VllmGenerateBackend, model_id: str):
        self.engine_backend = engine_backend
        self.model_id = model_id

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def dtype(self) -> str | None:
        return self.engine_backend.dtype

    def problem(self) -> str | None:
        return self.engine_backend.problem()

    @property
    def max_model_len(self) -> int:
        return self.engine_backend.max_model_len

    async def generate(self, prompt: str, params: SamplingParams, ids: list[int] | None = None) -> Completion:
        return await self.engine_backend.generate(prompt, params, ids, self.model_id)

    def stream(self, prompt: str, params: SamplingParams, ids: list[int] | None = None) -> AsyncIterator[StreamChunk]:
        return self.engine_backend.stream(prompt, params, ids, self.model_id)


def vllm_params(params: SamplingParams, kind):
    """Our SamplingParams -> vLLM's (temperature 0 is greedy in both)."""
    from vllm import SamplingParams as VllmSamplingParams

    return VllmSamplingParams(
        max_tokens=max(params.max_tokens, 1),  # 0 (echo only): vLLM makes one token, stream() drops it
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        repetition_penalty=params.repetition_penalty,
        frequency_penalty=params.frequency_penalty,
        presence_penalty=params.presence_penalty,
        ignore_eos=params.ignore_eos,
        seed=params.seed,
        stop=list(params.stop) or None,
        logprobs=params.logprobs,  # raw log-softmax (vLLM's default logprobs_mode), as the torch path
        prompt_logprobs=params.prompt_logprobs,
        structured_outputs=vllm_structured(params.structured),
        output_kind=kind,
    )


def vllm_structured(spec):
    """Our StructuredOutput -> vLLM's StructuredOutputsParams (its own backend applies it)."""
    if spec is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(choice=list(spec.choice) if spec.choice is not None else None, regex=spec.regex,
                                   json=spec.json, json_object=True if spec.json_object else None)


def token_logprobs(ids, positions, k: int) -> list[TokenLogprob]:
    """vLLM's per-position {token id: Logprob} (None for a prompt's first token) -> ours: each
    token's own logprob and the alternatives ranked 1..k (vLLM's dict adds the token itself)."""
    out = []
    for token, position in zip(ids, positions):
        if position is None:
            out.append(TokenLogprob(token, None))
            continue
        ranked = sorted((lp.rank, t, lp.logprob) for t, lp in position.items() if lp.rank is not None and lp.rank <= k)
        out.append(TokenLogprob(token, position[token].logprob, tuple((t, lp) for _, t, lp in ranked)))
    return out


def backend_error(exc: Exception) -> MagnetError:
    """vLLM's request validation errors are the caller's; a dead engine is a 503 (the
    service restarts it); anything else is ours."""
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, VLLMValidationError):
        return InvalidInputError(str(exc))
    if isinstance(exc, EngineDeadError):
        return NotReadyError("the generation engine died and is being restarted: retry in a few seconds")
    log.exception("vLLM failed on a request")
    return BackendError(f"the vLLM engine failed: {type(exc).__name__}")
