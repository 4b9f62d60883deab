"""SIGTERM drains: `magnet serve` in a subprocess finishes every accepted request, refuses new
connections, and exits — whether the signal goes to its PID or to its whole process group
(systemd, Ctrl-C, a shell entrypoint), with the torch backend (tiny Llama) and with vLLM
(embedded model, slow), whose engine processes must not die before the drain is over."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from magnet.server.testing import free_port, poll_ready

IN_FLIGHT = 6


def sample(text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def accepted_and_running(base_url: str) -> tuple[float, float]:
    """(generate requests accepted so far, requests still running), from one /metrics scrape."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    running = sample(text, "magnet_in_flight_requests ") - 1  # this scrape is in flight too
    done = sample(text, 'magnet_requests_total{route="/v1/generate",status="200"}')
    return running + done, running


def serve_command(backend: str, tiny_model_dir, port: int) -> list[str]:
    command = [sys.executable, "-m", "magnet.cli", "serve", "--heads", "none", "--generate-backend", backend,
               "--port", str(port), "--graceful-shutdown-s", "60"]
    if backend == "torch":
        return command + ["--model", str(tiny_model_dir), "--adapter", "none"]
    return command + ["--device", "cpu", "--dtype", "float32", "--vllm-kv-cache-gb", "0.5",
                      "--vllm-max-model-len", "512"]  # the embedded model (vLLM needs a real vocabulary)


@pytest.mark.parametrize("backend, target", [
    ("torch", "pid"), ("torch", "process group"),
    pytest.param("vllm", "process group", marks=pytest.mark.slow)])
def test_sigterm_finishes_accepted_requests_then_exits(tiny_model_dir, tmp_path, backend, target):
    if backend == "vllm":
        pytest.importorskip("vllm", exc_type=ImportError)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if backend == "torch":
        env["MAGNET_CACHE_DIR"] = str(tmp_path)  # vLLM reuses the embedded model's converted cache
    log = tmp_path / "server.err"  # a file, not a pipe: a full pipe nobody reads would block the server's logging
    with log.open("wb") as stderr:
        server = subprocess.Popen(serve_command(backend, tiny_model_dir, port),
                                  env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        poll_ready(base_url, 600)
        # ignore_eos: every request runs its 240 tokens (a sampled EOS would end one early)
        request = {"prompt": "The story", "max_tokens": 240, "temperature": 1.0, "seed": 1, "ignore_eos": True}
        with ThreadPoolExecutor(IN_FLIGHT) as pool, httpx.Client(timeout=120) as client:
            answers = [pool.submit(client.post, f"{base_url}/v1/generate", json=request)
                       for _ in range(IN_FLIGHT)]
            deadline = time.monotonic() + 30
            while accepted_and_running(base_url)[0] < IN_FLIGHT and time.monotonic() < deadline:
                time.sleep(0.005)
            accepted, running = accepted_and_running(base_url)
            assert accepted == IN_FLIGHT and running >= 2, "the signal must come while requests are running"
            if target == "pid":
                server.send_signal(signal.SIGTERM)
            else:
                os.killpg(server.pid, signal.SIGTERM)
            results = [a.result() for a in answers]
        assert [r.status_code for r in results] == [200] * IN_FLIGHT
        assert all(r.json()["usage"]["completion_tokens"] >= 1 for r in results)
        # uvicorn finishes the shutdown, then re-raises the signal it caught (the exit status
        # a supervisor expects from a process stopped by SIGTERM)
        assert server.wait(60) == -signal.SIGTERM
        assert "Application shutdown complete" in log.read_text(errors="replace")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base_url}/health", timeout=5)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


@pytest.mark.slow
def test_vllm_engine_processes_die_with_a_killed_server(tiny_model_dir):
    """Out of the server's process group (so that they outlive a group SIGTERM until the drain
    is over), vLLM's engine processes must still not outlive a server killed outright."""
    pytest.importorskip("vllm", exc_type=ImportError)
    psutil = pytest.importorskip("psutil")
    port = free_port()
    server = subprocess.Popen(serve_command("vllm", tiny_model_dir, port), env={**os.environ, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        poll_ready(f"http://127.0.0.1:{port}", 600)
        engines = psutil.Process(server.pid).children(recursive=True)
        assert engines and all(os.getpgid(p.pid) != os.getpgid(server.pid) for p in engines)
        server.kill()
        server.wait(30)
        gone, alive = psutil.wait_procs(engines, timeout=30)
        assert alive == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
