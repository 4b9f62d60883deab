"""`magnet serve`: flags over MAGNET_* settings, and a graceful stop that finishes in-flight work."""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn

from magnet.server import cli
from magnet.server.settings import Settings
from magnet.server.testing import app_with, free_port, occupy_worker, poll_ready


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_override_the_environment_and_unset_flags_keep_it(monkeypatch):
    monkeypatch.setenv("MAGNET_MAX_QUEUE", "9")
    monkeypatch.setenv("MAGNET_PORT", "9001")
    settings = cli.settings_from(parse("--port", "8123", "--max-wait-ms", "2.5", "--generate-backend", "torch"))
    assert (settings.port, settings.max_queue, settings.max_wait_ms) == (8123, 9, 2.5)
    assert settings.generate_backend == "torch" and settings.host == "127.0.0.1"


def test_narrow_products_are_read_from_the_flag_and_a_bad_form_is_refused_naming_the_forms():
    from pydantic import ValidationError

    from magnet.narrow import Tiers

    given = cli.settings_from(parse("--narrow-products", "bf16<=2,packed<=16"))
    assert Tiers.parse(given.narrow_products) == Tiers(2, 16)
    assert Tiers.parse(cli.settings_from(parse()).narrow_products) is None  # auto: measured at load
    with pytest.raises(ValidationError, match="bf16<=3,packed<=32"):
        cli.settings_from(parse("--narrow-products", "bf16=3"))


def test_every_flag_maps_to_a_settings_field():
    assert {field for field, _, _ in cli.FLAGS.values()} <= set(Settings.model_fields)
    with pytest.raises(SystemExit):
        parse("--generate-backend", "tensorrt")


def test_graceful_stop_finishes_a_queued_request(tiny_engine):
    """uvicorn's SIGTERM handler sets should_exit; here we set it ourselves while a request waits."""
    app = app_with(tiny_engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    poll_ready(url, 60)
    worker = app.state.service.worker
    release, _ = asyncio.run_coroutine_threadsafe(occupy_worker(worker), worker.loop).result(60)
    answers = []
    request = threading.Thread(target=lambda: answers.append(
        httpx.post(f"{url}/v1/infill", json={"prefix": "a ", "suffix": " b", "max_tokens": 3}, timeout=30)))
    request.start()
    while worker.depth < 1:
        time.sleep(0.001)
    server.should_exit = True  # what SIGTERM does
    time.sleep(0.2)
    assert thread.is_alive() and not answers  # still waiting for the in-flight request
    release.set()
    request.join(30)
    thread.join(30)
    assert not thread.is_alive()
    assert answers[0].status_code == 200 and len(answers[0].json()["fills"]) == 1


def test_magnet_serve_stops_on_sigterm_after_the_stream_it_serves(tiny_model_dir, tmp_path):
    port = free_port()
    argv = [sys.executable, "-m", "magnet.cli", "serve", "--model", str(tiny_model_dir), "--adapter", "none",
            "--heads", "none", "--device", "cpu", "--generate-backend", "torch", "--port", str(port)]
    log = open(tmp_path / "serve.log", "w+")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        poll_ready(url, 300)  # a bound, not a timing: a busy machine starts slowly
        body = {"prompt": "The quick brown fox", "max_tokens": 200, "stream": True}
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=60) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            process.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data: ")]
        assert first and rest[-1] == "data: [DONE]" and '"finish_reason":"' in rest[-2]
        # uvicorn finishes gracefully, then re-raises the signal so the exit status reports it.
        assert process.wait(60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log.seek(0)
    text = log.read()
    assert "Finished server process" in text
    # one access line per request, the app's own (client, id, method, path, status), not uvicorn's too
    served = [line for line in text.splitlines() if "/v1/generate" in line]
    assert len(served) == 1 and re.search(r"magnet\.access: 127\.0\.0\.1:\d+ \w+ POST /v1/generate 200 ", served[0])
