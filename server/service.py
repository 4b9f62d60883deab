"""What the routes call: the loaded models, their worker, the tagger and the generate backends.

Every served model is an engine of its own (`engines`, by served id: the default
first, then each named adapter, then the base; server/model_ids.py), each a full
copy of the weights with its adapter merged, all on one worker. Methods take a
request's `model` (None = the default). Tagging heads belong to the default model;
vLLM, when it runs, serves the default model and the others generate on torch.

Routes stay thin (parse, call one method here, shape the answer); the native
and the OpenAI-compatible routes share these methods. Every model call goes
through the worker (one thread). Tokenizing runs once per request, on the worker's
tokenizer thread (the "tokenize" stage): the token ids it makes are what admission
prices and what the engine encodes, and too-long inputs are refused before they take
a queue slot.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from magnet.errors import ForbiddenError, InvalidInputError, MagnetError, NotReadyError, UnknownTaskError
from magnet.hardware import dtype_name
from magnet.limits import checked_prompt_ids, prompt_token_ids
from magnet.protocol import Backends, HealthResponse
from magnet.sampling import Completion, InfillCompletion, SamplingParams, StreamChunk
from magnet.server import metrics
from magnet.server.generation import GenerateBackend, TorchGenerateBackend, generate_backends, spec_of
from magnet.server.model_ids import engine_ids
from magnet.server.registry import Registry, ServedModel
from magnet.server.settings import Settings
from magnet.server.shutdown import Draining
from magnet.server.work import EmbedWork, InfillWork, TagWork
from magnet.server.worker import ModelWorker

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0  # how often the generation engine is checked
MAX_RESTART_BACKOFF_S = 60.0
# The warm-up embeds these: long enough to give the worker a first measure of its drain rate
# (server/admission.py), so the wait estimate holds from the first request on.
WARMUP_TEXTS = ["A short sentence to warm up the model and measure how fast it runs, number %d." % k
                for k in range(16)]


@dataclass
class Embeddings:
    array: np.ndarray  # (N, H) float32: what the routes write out (server/fast_json.py)
    prompt_tokens: int

    @property
    def vectors(self) -> list[list[float]]:  # (N, H) as Python floats
        return self.array.tolist()


class Service:
    def __init__(self, settings: Settings, engine=None, tagger=None):
        self.settings = settings
        self.engine = engine  # the default model; None: loaded from settings at start
        self.models = Registry()  # served id -> ServedModel (engine, generate backend), the default first
        self.runtime_adapters: set[str] = set()  # the ids POST /v1/load_lora_adapter added
        self.tagger = tagger  # the default model's heads; None: loaded from settings.heads at start
        self.backend: GenerateBackend | None = None  # the default model's (vLLM or torch)
        self.worker = ModelWorker(settings.max_queue, settings.max_batch_tokens,
                                  settings.max_wait_ms / 1000, settings.retry_after_s,
                                  settings.max_request_tokens, settings.max_queued_tokens,
                                  settings.max_running_rows, settings.max_running_tokens,
                                  settings.max_queue_wait_s)
        self.ready = False
        self.load_error: str | None = None
        self.backend_problem: str | None = None  # set by the watchdog while generation is down
        self.draining = Draining()  # the shutdown, once it begins (server/shutdown.py)
        self._watchdog: asyncio.Task | None = None

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Load (on the worker thread), pick the generate backend, warm up, then be ready."""
        self.worker.start()
        try:
            if self.engine is None:
                self.engine = await self.worker.call("load", load_engine, self.settings)
            if self.tagger is None:
                self.tagger = await self.worker.call("load", load_tagger, self.engine, self.settings.heads)
            engines = await self.load_engines(self.engine)
            backends = generate_backends(self.settings, engines, self.engine, self.worker)
            for model_id, engine in engines.items():
                self.models.add(model_id, engine, backends[model_id])
            self.backend = backends[self.engine.name]
            for backend in self.backends.values():
                await backend.start()
            for engine in self.engines.values():
                seqs = engine.embedding_inputs(WARMUP_TEXTS)
                # measured: the worker's first drain rate (the wait estimate holds from the first request)
                await self.worker.call("warmup", engine.embed_token_ids, seqs, tokens=sum(map(len, seqs)),
                                       priced=False)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("the model failed to load")
            raise
        metrics.MODEL_INFO.info(self.describe())
        self.label_dtypes()
        self.ready = True
        if hasattr(self.backend, "problem"):
            self._watchdog = asyncio.create_task(self.watch_backend(), name="magnet-backend-watchdog")
        log.info("ready: %s", self.describe())

    async def load_engines(self, default) -> dict:
        """{served id: engine}: the default, one per named adapter, then the base (only with named
        adapters), all on the default's base weights; a name clash refuses to start."""
        named = self.settings.adapters
        ids = engine_ids(default.name, default.loaded.base.name, list(named))
        engines = {default.name: default}
        for model_id in ids[1:]:
            engines[model_id] = await self.worker.call("load", load_variant, default, named.get(model_id))
        return engines

    async def add_model(self, model_id: str, adapter_dir) -> None:
        """Serve one more adapter under `model_id` from now on (POST /v1/load_lora_adapter, its
        files and manifest already checked): an engine of the default's base weights with it
        merged, loaded on the worker; it generates on torch (vLLM's LoRA slots are fixed at start)."""
        self.require_ready()
        self.require_runtime_adapter_room()
        if any(job.model == model_id for job in [*self.worker._running_jobs, *self.worker._queue]):
            # its decodes would join the running batch of the previous weights under that name
            raise InvalidInputError(f"requests on the unloaded {model_id!r} are still running: load it again once "
                                    "they have finished, or choose another name")
        engine = await self.worker.call("load", load_variant, self.engine, str(adapter_dir))
        if model_id in self.models:  # another load of the same name finished first
            raise InvalidInputError(f"model {model_id!r} is already served: unload it first, or choose another name")
        self.require_runtime_adapter_room()  # another load may have taken the room meanwhile
        self.models.add(model_id, engine, TorchGenerateBackend(engine, self.worker, model_id))
        self.runtime_adapters.add(model_id)

    def require_runtime_adapter_room(self) -> None:
        """403 while loading adapters at run time is off (--max-runtime-adapters 0, the default),
        422 while that many are loaded."""
        limit = self.settings.max_runtime_adapters
        if limit == 0:
            raise ForbiddenError("loading adapters at run time is off on this server: start it with "
                                 "--max-runtime-adapters N (MAGNET_MAX_RUNTIME_ADAPTERS), and an API key, to allow it")
        if len(self.runtime_adapters) >= limit:
            raise InvalidInputError(f"{limit} adapters loaded at run time already, this server's limit "
                                    "(--max-runtime-adapters): unload one first")

    def remove_model(self, model_id: str) -> None:
        """Stop serving `model_id` (POST /v1/unload_lora_adapter): new requests naming it get a 404;
        requests already running finish on the engine they hold."""
        self.models.remove(model_id)
        self.runtime_adapters.discard(model_id)

    async def watch_backend(self, interval_s: float = WATCH_INTERVAL_S) -> None:
        """Notice a dead generation engine: not ready (503 with the reason) until a restart,
        retried with exponential backoff, brings it back."""
        backoff = interval_s
        while True:
            await asyncio.sleep(interval_s if self.backend_problem is None else backoff)
            problem = self.backend.problem() if self.backend_problem is None else self.backend_problem
            if problem is None:
                continue
            if self.backend_problem is None:
                log.error("%s: restarting it", problem)
                self.backend_problem = problem
            metrics.BACKEND_RESTARTS.inc()
            try:
                await self.backend.restart()
            except Exception:
                log.exception("restarting the generation engine failed; next try in %.0f s", backoff)
                backoff = min(2 * backoff, MAX_RESTART_BACKOFF_S)
                continue
            log.info("the generation engine is back")
            self.backend_problem, backoff = None, interval_s

    async def close(self) -> None:
        """Finish queued work (SIGTERM drains), then stop the backend and the threads."""
        self.ready = False
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.worker.close()
        for backend in self.backends.values() or [self.backend]:
            if backend is not None:
                await backend.close()

    @property
    def engines(self) -> dict:
        """{served id: its torch engine}, the default first."""
        return self.models.engines

    @property
    def backends(self) -> dict[str, GenerateBackend]:
        """{served id: its generate backend}, the default first."""
        return self.models.backends

    def describe(self) -> dict[str, str]:
        loaded = self.engine.loaded
        return {
            "model": self.engine.name,
            "adapter": str(loaded.adapter_path.name) if loaded.adapter_path else "none",
            "generate_backend": self.backend.name if self.backend else "none",
            "tasks": ",".join(self.tasks),
            "device": str(loaded.device),
            "dtype": dtype_name(loaded.dtype),  # the torch engine's: embed, tag, infill
            "generate_dtype": self.dtypes_of(self.engine.name).get(self.backend.name, "") if self.backend else "",
            "narrow_products": self.engine.narrow.describe(),  # the torch engine's kernels by rows (magnet/narrow.py)
        }

    def dtypes_of(self, model_id: str) -> dict[str, str]:
        """{backend: the dtype it runs `model_id` in}: the torch engine's weights, and vLLM's when
        it generates (both follow magnet.hardware.default_dtype unless --dtype says otherwise)."""
        dtypes = {"torch": dtype_name(self.engines[model_id].loaded.dtype)}
        backend = self.backends.get(model_id)
        if backend is not None and getattr(backend, "dtype", None):
            dtypes[backend.name] = backend.dtype
        return dtypes

    def label_dtypes(self) -> None:
        """magnet_model_dtype{model, backend, dtype} = 1 for every served model and backend."""
        for model_id in self.engines:
            for backend, dtype in self.dtypes_of(model_id).items():
                metrics.MODEL_DTYPE.labels(model_id, backend, dtype).set(1)

    @property
    def tasks(self) -> list[str]:
        return list(self.tagger.tasks) if self.tagger is not None else []

    def backends_of(self, model_id: str) -> Backends:
        """Which backend serves what for one served model (tagging: the default's heads only)."""
        tag = "torch" if self.tasks and model_id == self.engine.name else None
        return Backends(tag=tag, generate=self.backends[model_id].name)

    def health(self) -> HealthResponse:
        """The default model's, and each backend's state; GET /v1/models says it for every served model."""
        if not self.ready:
            return HealthResponse(ready=False, backend_states=self.backend_states())
        info = self.describe()
        return HealthResponse(ready=self.problem() is None, model=info["model"], adapter=info["adapter"],
                              tasks=self.tasks, backends=self.backends_of(self.engine.name),
                              backend_states=self.backend_states())

    def backend_states(self) -> dict[str, str]:
        """{backend: "ready" | "loading" | "failed: ..." | "restarting: ..." | "shutting down"}. The
        torch engine serves embed, tag and infill (and generate without vLLM); vLLM, generate."""
        if self.draining.began:
            return {name: "shutting down" for name in self.backend_names()}
        if not self.ready:
            return {"torch": f"failed: {self.load_failure}" if self.load_error else "loading"}
        states = {"torch": "ready"}
        if self.backend is not None and self.backend.name != "torch":
            problem = self.generate_problem()
            states[self.backend.name] = f"restarting: {problem}" if problem else "ready"
        return states

    @property
    def load_failure(self) -> str | None:
        """Why the model failed to load, as the answers say it: whole on a server without an API
        key; with one, only the error's kind, since /health and /ready are open and the message
        names paths on the server (the log has it whole)."""
        if self.load_error is None or not (self.settings.api_key or self.settings.api_key_file):
            return self.load_error
        return self.load_error.split(":", 1)[0]

    def backend_names(self) -> list[str]:
        return ["torch"] + ([self.backend.name] if self.backend is not None and self.backend.name != "torch" else [])

    def generate_problem(self) -> str | None:
        """Why generation cannot run now (its engine died), or None: read live, not only from the
        watchdog, so /ready and /health say it the moment a request finds the engine dead."""
        if self.backend_problem is not None:
            return self.backend_problem
        problem = getattr(self.backend, "problem", None)
        return problem() if problem is not None else None

    def problem(self) -> str | None:
        """Why this replica cannot serve every route now, or None (what /ready answers)."""
        if self.draining.began:
            return "the server is shutting down: retry on another replica"
        if self.worker.stopped is not None:
            return self.worker.stopped
        if not self.ready:
            if self.load_error:
                return f"the model failed to load ({self.load_failure}); see the server log"
            return "the model is still loading: retry in a few seconds"
        generate = self.generate_problem()
        if generate is not None:
            return (f"{generate}; it is being restarted: generation answers 503 meanwhile, embed, tag and "
                    "infill still serve: retry in a few seconds")
        return None

    def require_every_backend(self) -> None:
        """Every route can serve (/ready): 503 with the reason otherwise."""
        problem = self.problem()
        if problem is not None:
            raise NotReadyError(problem)

    def require_ready(self) -> None:
        """The torch engine serves (embed, tag, infill): a dead generation engine does not stop it."""
        if not self.ready or self.draining.began:
            raise NotReadyError(self.problem())

    def require_generating(self, served: ServedModel) -> None:
        """The served model's generate backend serves (a LoRA view: its engine's health)."""
        backend = served.backend
        problem = getattr(backend, "problem", None)
        problem = problem() if problem is not None else None
        if backend is self.backend or getattr(backend, "engine_backend", None) is self.backend:
            problem = problem or self.backend_problem
        if problem is not None:
            raise NotReadyError(f"{problem}; it is being restarted: retry in a few seconds (embed, tag and "
                                "infill still serve)")

    @property
    def model_name(self) -> str:
        """The default model's id."""
        self.require_ready()
        return self.engine.name

    def serving(self, model: ServedModel | str | None) -> ServedModel:
        """The served model a request's `model` means, the torch engine ready (503 otherwise):
        None or the alias = the default, unknown = 404. A ServedModel (what the routes'
        dependency resolved, server/registry.py) is taken as it is: checked once per request."""
        if isinstance(model, ServedModel):
            return model
        self.require_ready()
        return self.models.resolve(model)

    # --- embed and tag: batched --------------------------------------------------------

    async def embed(self, texts: list[str], instruction: str | None, normalize: bool, truncate: bool,
                    model: ServedModel | str | None = None, cut_left: bool = False) -> Embeddings:
        served = self.serving(model)
        model_id, engine = served.id, served.engine
        instruction = engine.instruction if instruction is None else instruction
        # the ids the model reads, tokenized once: what admission prices and the engine encodes
        seqs = await self.tokenize("embed", lambda: engine.embedding_inputs(texts, instruction, truncate, cut_left))
        work = EmbedWork(engine, model_id, seqs, instruction, normalize, truncate)
        vectors = await self.worker.submit_work(work)  # big ones run in slices
        metrics.PROMPT_TOKENS.labels("embed").inc(work.tokens)
        rows = np.stack(vectors) if vectors else np.zeros((0, engine.model.config.hidden_size), np.float32)
        return Embeddings(rows, work.tokens)

    async def tag(self, texts: list[str] | None, words: list[list[str]] | None, task: str,
                  model: ServedModel | str | None = None) -> list[dict]:
        served = self.serving(model)
        model_id, engine = served.id, served.engine
        tagger = self.tagger
        if tagger is None or not tagger.tasks:
            raise UnknownTaskError(
                f"task {task!r} is not available: no tagging heads are loaded. Start the server "
                "with --heads DIR (heads trained by `magnet train-tagger` for this model)."
            )
        if engine is not self.engine:  # heads are trained on one model's word vectors (and carry its hash)
            raise UnknownTaskError(
                f"model {model_id!r} has no tagging heads: the heads belong to {self.engine.name!r}, the "
                "default model; send that as `model` (or leave `model` out) to tag")
        if task not in tagger.tasks:  # before any queueing or model work
            raise UnknownTaskError(f"unknown task {task!r}: the loaded tagging tasks are {', '.join(tagger.tasks)}")
        # words and token ids, made once: what admission prices and the model reads
        items = await self.tokenize("tag", lambda: tagger.prepare(texts, words))
        work = TagWork(tagger, model_id, task, items)
        results = await self.worker.submit_work(work)
        metrics.PROMPT_TOKENS.labels("tag").inc(work.tokens)
        return results

    async def prompt_ids(self, served: ServedModel, prompt: str, params: SamplingParams,
                         ids: list[int] | None) -> list[int]:
        """The prompt's ids as the backend reads them, checked against its limit: tokenized once,
        on the tokenizer thread (`ids` given: tokenized earlier, only checked)."""
        limit = served.backend.max_model_len
        if ids is not None:
            return checked_prompt_ids(ids, params, limit)
        tokenizer = served.engine.tokenizer  # the backends' own: vLLM loads the same files
        return await self.tokenize("generate", lambda: prompt_token_ids(tokenizer, prompt, params, limit))

    async def tokenize(self, kind: str, prepare):
        """Run `prepare()` on the tokenizer thread (the worker's); timed as the "tokenize" stage."""
        return await self.worker.tokenize(kind, prepare)

    # --- infill and generate -----------------------------------------------------------

    async def infill(self, segments: list[str], params: SamplingParams,
                     model: ServedModel | str | None = None) -> InfillCompletion:
        served = self.serving(model)
        model_id, engine = served.id, served.engine
        # decode rows: one per distinct candidate gap length, laid out (the segments tokenized once)
        # priced (InfillWork): every row's prefill, and what the fills of every row may add
        plan = await self.tokenize("infill", lambda: engine.infill_rows(segments, params))
        result = await self.worker.submit_work(InfillWork(engine, model_id, segments, plan, params.max_tokens))
        count_usage("infill", result.prompt_tokens, result.completion_tokens)
        return result

    async def generate(self, prompt: str, params: SamplingParams, model: ServedModel | str | None = None,
                       ids: list[int] | None = None) -> Completion:
        served = self.serving(model)
        self.require_generating(served)
        ids = await self.prompt_ids(served, prompt, params, ids)
        result = await served.backend.generate(prompt, params, ids)
        count_usage("generate", result.prompt_tokens, result.completion_tokens)
        return result

    async def generate_stream(self, prompt: str, params: SamplingParams, model: ServedModel | str | None = None,
                              ids: list[int] | None = None) -> AsyncIterator[StreamChunk]:
        """The backend's chunks; the first is awaited before returning, so bad input raises here."""
        served = self.serving(model)
        self.require_generating(served)
        ids = await self.prompt_ids(served, prompt, params, ids)
        chunks = aiter(served.backend.stream(prompt, params, ids))
        try:
            first = await anext(chunks)
        except MagnetError:
            await chunks.aclose()
            raise
        return counted_stream(first, chunks)


async def counted_stream(first: StreamChunk, chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[StreamChunk]:
    try:
        chunk = first
        while True:
            if chunk.finish_reason is not None:
                count_usage("generate", chunk.prompt_tokens, chunk.completion_tokens)
            yield chunk
            chunk = await anext(chunks)
    except StopAsyncIteration:
        return
    finally:
        await chunks.aclose()  # the client left early: cancel the generation


def count_usage(kind: str, prompt_tokens: int, completion_tokens: int) -> None:
    metrics.PROMPT_TOKENS.labels(kind).inc(prompt_tokens)
    metrics.GENERATED_TOKENS.labels(kind).inc(completion_tokens)


def load_engine(settings: Settings):
    from magnet.engine import Engine, EngineConfig
    from magnet.loading import ModelSpec
    from magnet.narrow import Tiers

    spec = ModelSpec(model=settings.model, adapter=settings.adapter, device=settings.device, dtype=settings.dtype)
    config = EngineConfig(max_length=settings.max_length, narrow_tiers=Tiers.parse(settings.narrow_products))
    return Engine.from_spec(spec, config)


def load_variant(default, adapter: str | None):
    """Another engine on the default's base weights: with `adapter` (a dir) merged, or the base
    itself (None). A full copy of the weights: fine for small models; serve big ones one
    adapter per replica instead."""
    from dataclasses import replace

    from magnet.engine import Engine

    return Engine.from_spec(replace(spec_of(default), adapter=adapter), default.config)


def load_tagger(engine, heads: str | None):
    """The tagger for `heads` ("default", a dir, or "none"); None when there is nothing to load."""
    if heads in (None, "", "none"):
        return None
    from magnet.tagging import Tagger

    if heads != "default":
        return Tagger.load(engine, heads)  # an explicit dir must load: refuse to start otherwise
    try:
        return Tagger.load(engine)
    except (FileNotFoundError, ValueError) as exc:  # no default heads, or heads of another model
        log.warning("tagging is off: %s", exc)
        return None
