"""A client that leaves a stream early stops the generation on the server (real HTTP on loopback)."""
from __future__ import annotations

import time

import httpx

from magnet.server.testing import app_with, serve_on_loopback


class CountingEngine:
    """The tiny engine, counting the chunks its generate_stream really produces."""

    def __init__(self, engine):
        self.engine = engine
        self.produced = 0
        self.finished = False

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate_stream(self, prompt, params):
        for chunk in self.engine.generate_stream(prompt, params):
            self.produced += 1
            self.finished = chunk.finish_reason is not None
            yield chunk


def test_closing_a_stream_early_stops_decoding(tiny_engine):
    engine = CountingEngine(tiny_engine)
    app = app_with(engine)
    budget = tiny_engine.max_length - 16
    with serve_on_loopback(app) as url:
        body = {"prompt": "The quick", "max_tokens": budget, "stream": True}
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=60) as response:
            next(line for line in response.iter_lines() if line.startswith("data: "))
        deadline = time.monotonic() + 30
        while app.state.service.worker.depth or engine.produced == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # The worker is free again as soon as the next job runs on it:
        assert httpx.post(f"{url}/v1/embed", json={"input": "a fox"}, timeout=60).status_code == 200
    assert not engine.finished and engine.produced < budget
