"""A client that leaves a stream early stops the generation on the server (real HTTP on loopback)."""
from __future__ import annotations

import time

import httpx

from magnet.server.testing import app_with, serve_on_loopback


class CountingEngine:
    """The tiny engine, keeping the generations it starts (to count the tokens really decoded)."""

    def __init__(self, engine):
        self.engine = engine
        self.decodes = []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def start_generate_ids(self, prompts, params):
        batch = self.engine.start_generate_ids(prompts, params)
        self.decodes += batch.decodes
        return batch

    @property
    def produced(self) -> int:
        return sum(len(d.spans[0].ids) for d in self.decodes)


def test_closing_a_stream_early_stops_decoding(tiny_engine):
    engine = CountingEngine(tiny_engine)
    app = app_with(engine)
    budget = tiny_engine.max_length - 16
    with serve_on_loopback(app) as url:
        body = {"prompt": "The quick", "max_tokens": budget, "stream": True}
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=60) as response:
            next(line for line in response.iter_lines() if line.startswith("data: "))
        deadline = time.monotonic() + 30
        worker = app.state.service.worker
        while worker.depth or worker.running or engine.produced == 0:  # its row leaves the batch
            assert time.monotonic() < deadline
            time.sleep(0.01)
        produced = engine.produced
        assert httpx.post(f"{url}/v1/embed", json={"input": "a fox"}, timeout=60).status_code == 200
    assert engine.produced == produced < budget  # no token decoded after the row left
    assert not engine.decodes[0].done
