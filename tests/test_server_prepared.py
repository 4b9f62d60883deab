"""One prepared request: its `model` resolved once (server/registry.py), its input tokenized once."""
from __future__ import annotations

import pytest

from magnet.server.registry import Registry
from magnet.server.testing import app_with, assert_error, running_app

PROMPT = {"prompt": "Once upon a time", "max_tokens": 2, "temperature": 0}


@pytest.fixture
def counted_resolution(monkeypatch):
    """{"resolve": n, "ready": n}: model look-ups and readiness checks so far."""
    from magnet.server.service import Service

    counts = {"resolve": 0, "ready": 0}
    resolve, require_ready = Registry.resolve, Service.require_ready

    def counted_resolve(self, requested):
        counts["resolve"] += 1
        return resolve(self, requested)

    def counted_ready(self):
        counts["ready"] += 1
        return require_ready(self)

    monkeypatch.setattr(Registry, "resolve", counted_resolve)
    monkeypatch.setattr(Service, "require_ready", counted_ready)
    return counts


@pytest.mark.parametrize("route, body", [
    ("/v1/generate", PROMPT),
    ("/v1/generate", {**PROMPT, "stream": True}),
    ("/v1/completions", {**PROMPT, "n": 2}),
    ("/v1/completions", {"prompt": "The cat", "suffix": " on the mat.", "max_tokens": 2}),
    ("/v1/infill", {"segments": ["The cat", " on the mat."], "max_tokens": 2}),
    ("/v1/embed", {"input": ["a", "b"]}),
    ("/v1/embeddings", {"input": [[5, 6, 7]]}),
    ("/v1/score", {"query": "a", "texts": ["b", "c"]}),
    ("/embed", {"inputs": "a"}),
])
async def test_a_request_resolves_its_model_once(tiny_engine, counted_resolution, route, body):
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        counted_resolution.update(resolve=0, ready=0)
        response = await http.post(route, json={"model": "magnet", **body} if route.startswith("/v1") else body)
        assert response.status_code == 200, response.text
    assert counted_resolution == {"resolve": 1, "ready": 1}


async def test_an_unknown_model_is_still_a_404_naming_the_served_ids(tiny_engine):
    async with running_app(app_with(tiny_engine)) as http:
        for route, body in [("/v1/generate", PROMPT), ("/v1/embed", {"input": "a"}),
                            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})]:
            assert_error(await http.post(route, json={**body, "model": "nope"}), 404, "model_not_found",
                         "'nope'", repr(tiny_engine.name), "'magnet'")
