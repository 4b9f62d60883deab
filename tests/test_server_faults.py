"""The fault suite: no request starves the others, one backend's death does not take the rest
down, a bad adapter is never served, and hostile transports and shutdowns get clear answers.

Fast cases run on the tiny random Llama; the starvation and NaN-adapter cases on the real
embedded model are marked slow.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
import torch

from magnet.errors import OverloadedError
from magnet.server.testing import app_with, assert_error, occupy_worker, running_app, serve_on_loopback, submit
from magnet.server.worker import ModelWorker


class Recorder:
    """A sliceable batch function: each payload is a list of items; records every call's items,
    and can hold its first call until released."""

    def __init__(self, hold_first: bool = False):
        self.calls: list[list] = []
        self.first_started, self.release = threading.Event(), threading.Event()
        self.hold_first = hold_first

    def __call__(self, payloads: list[list]) -> list[list]:
        self.calls.append([item for payload in payloads for item in payload])
        if self.hold_first and len(self.calls) == 1:
            self.first_started.set()
            self.release.wait(30)
        return [[item * 2 for item in payload] for payload in payloads]


def started_worker(**limits) -> ModelWorker:
    worker = ModelWorker(**{"max_queue": 64, "max_batch_tokens": 30, "max_wait_s": 0.0, **limits})
    worker.start()
    return worker


# --- 1. a big one-shot job runs in slices, others run between them, it stops when its client leaves


async def test_a_big_job_runs_in_slices_and_a_small_one_queued_behind_it_finishes_first():
    worker, run = started_worker(), Recorder()
    release, _ = await occupy_worker(worker)
    big = asyncio.ensure_future(submit(worker, "embed", ("k",), list("abcdefghij"), run, sizes=[10] * 10))
    small = asyncio.ensure_future(submit(worker, "embed", ("k",), ["z"], run, sizes=[5]))
    while worker.depth < 2:
        await asyncio.sleep(0.001)
    release.set()
    assert await small == ["zz"]
    assert not big.done()  # the small one did not wait for the whole big one
    assert await big == [c * 2 for c in "abcdefghij"]
    assert run.calls[0] == list("abc")  # one slice: the budget (30 tokens)
    assert "z" in run.calls[1] and len(run.calls) >= 4
    await worker.close()


async def test_a_sliced_job_stops_at_the_next_slice_when_its_client_leaves():
    worker, run = started_worker(), Recorder(hold_first=True)
    big = asyncio.ensure_future(submit(worker, "embed", ("k",), list("abcdefghij"), run, sizes=[10] * 10))
    assert await asyncio.to_thread(run.first_started.wait, 30)
    big.cancel()  # the client left during the first slice
    await asyncio.sleep(0.01)
    run.release.set()
    assert await worker.call("after", lambda: "next") == "next"
    assert run.calls == [list("abc")]  # no slice after the first
    await worker.close()


# --- 2. requests are priced by what they cost: n x best_of is refused, naming what to lower


async def test_n_times_best_of_over_the_running_rows_is_refused_naming_n_and_best_of(tiny_engine):
    async with running_app(app_with(tiny_engine)) as http:
        body = {"prompt": "The cat sat", "suffix": "the mat.", "n": 16, "best_of": 16, "max_tokens": 4,
                "temperature": 1.0}
        refused = await http.post("/v1/completions", json=body)
        assert_error(refused, 413, "payload_too_large", "lower n or best_of", "64 rows")
        assert (await http.post("/v1/completions", json={**body, "n": 2, "best_of": 2})).status_code == 200


async def test_a_request_priced_over_the_limit_counts_every_row_and_new_token(tiny_engine):
    async with running_app(app_with(tiny_engine, max_request_tokens=600)) as http:
        body = {"prompt": "The cat sat", "suffix": "the mat.", "n": 4, "best_of": 4, "max_tokens": 40,
                "temperature": 1.0}  # 16 rows x 40 new tokens alone: 640
        refused = await http.post("/v1/completions", json=body)
        assert_error(refused, 413, "payload_too_large", "max_tokens", "600")


# --- 3. the queue refuses by estimated wait, from the measured drain rate


async def test_the_queue_refuses_by_estimated_wait_with_retry_after_from_the_drain_rate():
    worker = started_worker(max_queue_wait_s=2.0)
    worker.drain.record(1000, 1.0)  # measured: 1000 tokens of work per second
    release, _ = await occupy_worker(worker)
    queued = asyncio.ensure_future(submit(worker, "embed", ("k",), ["a"], Recorder(), sizes=[5000]))
    while worker.depth < 1:
        await asyncio.sleep(0.001)
    with pytest.raises(OverloadedError) as refused:
        await submit(worker, "embed", ("k",), ["b"], Recorder(), sizes=[1])
    assert refused.value.retry_after == 3.0  # 5 s of work ahead, 2 s allowed
    assert "~5 s" in refused.value.message
    release.set()
    assert await queued == ["aa"]
    await worker.close()


async def test_a_busy_server_answers_429_with_retry_after_over_http(tiny_engine):
    app = app_with(tiny_engine, max_queue_wait_s=1.0)
    async with running_app(app) as http:
        worker = app.state.service.worker
        release, held = await occupy_worker(worker)
        worker.drain = type(worker.drain)()
        worker.drain.record(10, 1.0)  # 10 tokens/s: anything queued is a long wait
        first = asyncio.ensure_future(http.post("/v1/embed", json={"input": ["a fox " * 20]}))
        while worker.depth < 1:
            await asyncio.sleep(0.001)
        refused = await http.post("/v1/embed", json={"input": "hi"})
        assert_error(refused, 429, "overloaded", "would wait")
        assert int(refused.headers["Retry-After"]) >= 1
        release.set()
        assert (await first).status_code == 200
        await held


async def test_the_choices_of_one_request_do_not_count_as_a_wait_for_each_other(tiny_engine):
    app = app_with(tiny_engine, max_queue_wait_s=1.0)
    async with running_app(app) as http:
        worker = app.state.service.worker
        release, held = await occupy_worker(worker)
        worker.drain = type(worker.drain)()
        worker.drain.record(10, 1.0)  # 10 tokens/s: one choice's prefill alone is a long wait
        body = {"prompt": "The cat sat", "suffix": "the mat.", "n": 4, "best_of": 2, "max_tokens": 3,
                "temperature": 1.0}
        answer = asyncio.ensure_future(http.post("/v1/completions", json=body))
        while worker.depth < 4:
            await asyncio.sleep(0.001)
        assert_error(await http.post("/v1/embed", json={"input": "hi"}), 429, "overloaded")  # others do wait
        release.set()
        assert (await answer).status_code == 200 and len((await answer).json()["choices"]) == 4
        await held


# --- 4. the shutdown deadline answers JSON 503, streams an error event


async def test_at_the_deadline_a_request_still_running_gets_json_503_not_ready(tiny_engine):
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        service = app.state.service
        release, held = await occupy_worker(service.worker)
        waiting = asyncio.ensure_future(http.post("/v1/embed", json={"input": "still queued"}))
        while service.worker.depth < 1:
            await asyncio.sleep(0.001)
        service.draining.begin(0.05)
        answer = await asyncio.wait_for(waiting, 10)
        assert_error(answer, 503, "not_ready", "grace period")
        assert_error(await http.get("/ready"), 503, "not_ready", "shutting down")
        assert service.worker.depth == 0  # its work left the queue: the drain does not run it
        release.set()
        await held


def test_at_the_deadline_a_started_stream_ends_with_an_error_event(tiny_engine):
    app = app_with(tiny_engine)
    with serve_on_loopback(app) as url:
        service = app.state.service
        body = {"prompt": "The quick", "max_tokens": tiny_engine.max_length - 16, "stream": True}
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=60) as response:
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            loop = service.worker.loop
            hold = asyncio.run_coroutine_threadsafe(occupy_worker(service.worker), loop).result(30)
            loop.call_soon_threadsafe(service.draining.begin, 0.05)
            rest = list(lines)
            hold[0].set()
    assert "event: error" in rest
    error = json.loads(next(line for line in rest if line.startswith("data: {\"error\"")).removeprefix("data: "))
    assert error["error"]["code"] == "not_ready"


# --- 5. a dead generation engine: only generation answers 503


class DeadEngineBackend:
    """A vLLM-like backend whose engine process has died."""

    name = "vllm"
    max_model_len = 2048

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def problem(self) -> str | None:
        return "the vLLM engine process died"

    async def restart(self) -> None:
        raise RuntimeError("still down")

    async def generate(self, prompt, params, ids=None):
        raise AssertionError("a dead engine is never called")


async def test_a_dead_vllm_engine_leaves_embed_tag_and_infill_serving(tiny_engine, monkeypatch):
    from magnet.server import generation

    monkeypatch.setattr(generation, "select_backend", lambda *args, **kwargs: DeadEngineBackend())
    async with running_app(app_with(tiny_engine)) as http:
        assert (await http.post("/v1/embed", json={"input": "a fox"})).status_code == 200
        infill = await http.post("/v1/infill", json={"segments": ["The cat", "the mat."], "max_tokens": 3})
        assert infill.status_code == 200
        assert_error(await http.post("/v1/generate", json={"prompt": "a", "max_tokens": 2}), 503, "not_ready",
                     "died", "embed")
        assert_error(await http.get("/ready"), 503, "not_ready", "died")
        health = await http.get("/health")
        assert health.status_code == 200
        states = health.json()["backend_states"]
        assert states["torch"] == "ready" and states["vllm"].startswith("restarting: the vLLM engine")


# --- 6. an adapter with NaN weights, or a truncated one, is refused naming it and its path


def nan_adapter(tiny_model_dir, path):
    from peft import LoraConfig, get_peft_model

    from magnet.loading import ModelSpec, load_model
    from magnet.manifest import AdapterManifest

    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu"))
    model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.constant_(param, float("nan"))
    model.save_pretrained(path)
    AdapterManifest(base=loaded.base).save(path)
    return path


def test_an_adapter_with_nan_weights_is_refused_naming_it_and_its_path(tiny_model_dir, tmp_path):
    from magnet.adapter_checks import AdapterCheckError
    from magnet.loading import ModelSpec, load_model

    adapter = nan_adapter(tiny_model_dir, tmp_path / "broken")
    with pytest.raises(AdapterCheckError, match="non-finite weights") as refused:
        load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(adapter), device="cpu"))
    assert "'broken'" in str(refused.value) and str(adapter) in str(refused.value)


def test_a_truncated_adapter_is_refused_naming_it_and_its_path(tiny_model_dir, tmp_path):
    from magnet.adapter_checks import AdapterCheckError
    from magnet.loading import ModelSpec, load_model

    adapter = nan_adapter(tiny_model_dir, tmp_path / "cut")
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(AdapterCheckError, match="truncated or corrupt") as refused:
        load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(adapter), device="cpu"))
    assert str(adapter) in str(refused.value)


async def test_a_server_given_a_nan_adapter_is_never_ready_and_says_which(tiny_model_dir, tmp_path):
    from magnet.server.app import create_app
    from magnet.server.settings import Settings

    adapter = nan_adapter(tiny_model_dir, tmp_path / "broken")
    app = create_app(Settings(model=str(tiny_model_dir), adapter=str(adapter), heads="none",
                              generate_backend="torch", device="cpu"))
    with pytest.raises(RuntimeError, match="non-finite"):
        async with running_app(app):
            pass


# --- 7. transport limits: a 1 MB header, a header that never ends


def raw_exchange(port: int, data: bytes, wait_s: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture()
def limited_server(tiny_model_dir):
    import uvicorn

    from magnet.server.cli import magnet_server
    from magnet.server.settings import Settings
    from magnet.server.testing import free_port, poll_ready

    settings = Settings(model=str(tiny_model_dir), adapter="none", heads="none", generate_backend="torch",
                        device="cpu", port=free_port(), max_header_bytes=8192, header_timeout_s=1.0)
    server = magnet_server(settings)
    server.config.log_level = "warning"
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    poll_ready(f"http://127.0.0.1:{settings.port}", 60)
    yield settings.port
    server.should_exit = True
    thread.join(30)
    assert isinstance(server, uvicorn.Server)


def test_a_one_megabyte_header_is_refused_with_431(limited_server):
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    answer = raw_exchange(limited_server, head)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"header_too_large"' in answer
    assert httpx.get(f"http://127.0.0.1:{limited_server}/health", timeout=10).status_code == 200


def test_a_header_trickled_past_the_header_timeout_is_closed_with_408(limited_server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited_server), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        for _ in range(20):  # a header byte every 0.2 s, never ending
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.2)
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 6


# --- 8. aborted streams are 499 and counted; messages say what to change


def test_a_stream_the_client_leaves_is_logged_499_and_counted(tiny_engine, caplog):
    from magnet.server import metrics

    app = app_with(tiny_engine)
    cancelled = metrics.CANCELLED.labels("generate")
    before = cancelled._value.get()
    with serve_on_loopback(app) as url, caplog.at_level("INFO", logger="magnet.access"):
        body = {"prompt": "The quick", "max_tokens": tiny_engine.max_length - 16, "stream": True}
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=60) as response:
            next(line for line in response.iter_lines() if line.startswith("data: "))
        deadline = time.monotonic() + 20
        while cancelled._value.get() == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cancelled._value.get() == before + 1
        assert metrics.REQUESTS.labels("/v1/generate", "499")._value.get() >= 1
        assert any("/v1/generate 499" in record.getMessage() for record in caplog.records)


async def test_a_path_cannot_write_a_log_line_or_a_terminal_escape_of_its_own(tiny_engine, caplog):
    forged = "/v1/embed%0A2026-01-01 00:00:00,000 INFO magnet.access: 203.0.113.9:1 admin POST /x 200%1b[2J"
    with caplog.at_level("INFO", logger="magnet.access"):
        async with running_app(app_with(tiny_engine, api_key="k")) as http:
            assert (await http.get(forged)).status_code == 401
    [line] = [r.getMessage() for r in caplog.records if "/v1/embed" in r.getMessage()]
    assert "\n" not in line and "\x1b" not in line and "/v1/embed\\n2026" in line and "\\x1b[2J" in line


async def test_misleading_messages_now_say_what_to_change(tiny_engine):
    async with running_app(app_with(tiny_engine)) as http:
        deep = "[" * 100_000 + "]" * 100_000
        assert_error(await http.post("/v1/embed", content=deep, headers={"content-type": "application/json"}),
                     422, "invalid_input", "nests too deeply")
        assert_error(await http.post("/v1/embed", content='{"input": "hi"}', headers={"content-type": "text/plain"}),
                     422, "invalid_input", "Content-Type: application/json", "text/plain")
        assert_error(await http.post("/v1/score", json={"query": "  ", "texts": ["a"]}), 422, "invalid_input",
                     "query is empty")
        assert_error(await http.post("/v1/generate", json={"prompt": "a", "max_tokens": True}), 422,
                     "invalid_input", "max_tokens must be a number")




# --- on the real embedded model (slow) ----------------------------------------------------


@pytest.fixture(scope="module")
def real_engine():
    from magnet.engine import Engine
    from magnet.loading import ModelSpec

    return Engine.from_spec(ModelSpec(device="cpu"))


class CallLog:
    """The real engine, logging the texts of every embed call (one call = one slice or batch)."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self.first_call = threading.Event()
        self.texts: dict[tuple, str] = {}  # the ids the service prepared -> their text

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def embedding_inputs(self, texts, *args, **kwargs):
        seqs = self.engine.embedding_inputs(texts, *args, **kwargs)
        self.texts.update({tuple(seq): text for seq, text in zip(seqs, texts)})
        return seqs

    def embed_token_ids(self, seqs, *args, **kwargs):
        self.calls.append([self.texts.get(tuple(seq)) for seq in seqs])
        self.first_call.set()
        return self.engine.embed_token_ids(seqs, *args, **kwargs)


@pytest.mark.slow
async def test_a_big_embed_on_the_real_model_lets_a_small_one_through_and_stops_when_its_client_leaves(real_engine):
    """~5k tokens in texts of ~850: slices of one text (budget 1024); a one-word embed sent while
    the first slice runs is answered in the next call, and a big request cancelled during a
    slice runs no further slice."""
    engine = CallLog(real_engine)
    long_text = "The cat sat on the mat and looked at the bird in the tall tree. " * 57
    big_texts = [f"{k} {long_text}" for k in range(6)]
    # the queue's time limit off: on a slow or busy machine one slice may outlast it (this test is
    # about slicing; refusing by estimated wait has its own tests)
    app = app_with(engine, max_batch_tokens=1024, max_queue_wait_s=600)
    async with running_app(app, ready_timeout=120) as http:
        service = app.state.service
        engine.calls.clear()
        engine.first_call.clear()
        big = asyncio.ensure_future(http.post("/v1/embed", json={"input": big_texts}, timeout=300))
        assert await asyncio.to_thread(engine.first_call.wait, 60)
        small = await http.post("/v1/embed", json={"input": "hello"}, timeout=300)
        assert small.status_code == 200
        assert ["hello"] in [[t for t in call if t == "hello"] for call in engine.calls[:2]]  # right after one slice
        answer = await big
        assert answer.status_code == 200 and len(answer.json()["embeddings"]) == 6
        assert sum(len([t for t in call if t != "hello"]) for call in engine.calls) == 6 and len(engine.calls) >= 6
        # the client leaves during the first slice: no slice after it
        engine.calls.clear()
        engine.first_call.clear()
        gone = asyncio.ensure_future(service.embed(big_texts, None, True, False))
        assert await asyncio.to_thread(engine.first_call.wait, 60)
        gone.cancel()
        assert (await http.post("/v1/embed", json={"input": "after"}, timeout=300)).status_code == 200
        assert sum(len([t for t in call if t != "after"]) for call in engine.calls) <= 2


@pytest.mark.slow
def test_the_shipped_adapter_made_nan_or_overflowing_is_refused(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from magnet.adapter_checks import AdapterCheckError
    from magnet.loading import DEFAULT_ADAPTER_DIR, ModelSpec, load_model

    # "nan": one NaN factor; "huge": every factor of layer 0's MLP at its dtype's largest value
    # (finite), whose merged MLP overflows to inf on any input
    for name in ("nan", "huge"):
        adapter = tmp_path / name
        shutil.copytree(DEFAULT_ADAPTER_DIR, adapter)
        weights = load_file(adapter / "adapter_model.safetensors")
        for key in [k for k in sorted(weights) if ".layers.0.mlp." in k][: 1 if name == "nan" else None]:
            weights[key] = torch.full_like(weights[key], float("nan") if name == "nan"
                                           else torch.finfo(weights[key].dtype).max)
        save_file(weights, adapter / "adapter_model.safetensors")
        expected = "non-finite weights" if name == "nan" else "non-finite outputs"
        with pytest.raises(AdapterCheckError, match=expected) as refused:
            load_model(ModelSpec(adapter=str(adapter), device="cpu"))
        assert str(adapter) in str(refused.value)


@pytest.mark.slow
def test_a_killed_vllm_engine_leaves_embed_and_infill_at_200_and_ready_says_so_at_once():
    pytest.importorskip("vllm", exc_type=ImportError)
    psutil = pytest.importorskip("psutil")
    import os
    import signal

    from magnet.server.app import create_app
    from magnet.server.settings import Settings

    settings = Settings(generate_backend="vllm", device="cpu", dtype="float32", heads="none",
                        vllm_kv_cache_gb=0.5, vllm_max_model_len=512)
    with serve_on_loopback(create_app(settings), ready_timeout=600) as url:
        generate = {"prompt": "The capital of France is", "max_tokens": 4}
        assert httpx.post(f"{url}/v1/generate", json=generate, timeout=120).status_code == 200
        engines = psutil.Process(os.getpid()).children(recursive=True)
        assert engines
        for process in engines:  # the engine processes this test's server started
            os.kill(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (answer := httpx.post(f"{url}/v1/generate", json=generate, timeout=120)).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert_error(answer, 503, "not_ready")
        assert httpx.get(f"{url}/ready", timeout=30).status_code == 503  # at once, not at the next watch
        assert httpx.post(f"{url}/v1/embed", json={"input": "a fox"}, timeout=120).status_code == 200
        infill = {"segments": ["The cat", "the mat."], "max_tokens": 3}
        assert httpx.post(f"{url}/v1/infill", json=infill, timeout=120).status_code == 200
        assert httpx.get(f"{url}/health", timeout=30).json()["backend_states"]["torch"] == "ready"
