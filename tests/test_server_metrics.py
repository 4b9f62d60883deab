"""/metrics after requests: magnet_* series move by what the requests did."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from magnet.server.testing import app_with, running_app


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(table, name: str, **labels) -> float:
    return table.get((name, frozenset(labels.items())), 0.0)


async def scrape(http):
    response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_requests_stages_batches_and_tokens_are_counted(tiny_engine):
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        before = await scrape(http)
        embed = (await http.post("/v1/embed", json={"input": ["a fox", "a dog"]})).json()
        generate = (await http.post("/v1/generate", json={"prompt": "The quick", "max_tokens": 4})).json()
        await http.post("/v1/embed", json={"input": []})
        after = await scrape(http)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("magnet_requests_total", route="/v1/embed", status="200") == 1
    assert moved("magnet_requests_total", route="/v1/embed", status="422") == 1
    assert moved("magnet_requests_total", route="/v1/generate", status="200") == 1
    assert moved("magnet_request_duration_seconds_count", route="/v1/embed") == 2
    for stage in ("queue", "tokenize", "model"):
        assert moved("magnet_stage_duration_seconds_count", stage=stage, kind="embed") == 1
    assert moved("magnet_stage_duration_seconds_count", stage="model", kind="generate") == 1
    assert moved("magnet_batch_size_count", kind="embed") == 1
    assert moved("magnet_batch_size_sum", kind="embed") == 1  # one request in that batch
    assert moved("magnet_batch_tokens_sum", kind="embed") == embed["usage"]["prompt_tokens"]
    assert moved("magnet_prompt_tokens_total", kind="embed") == embed["usage"]["prompt_tokens"]
    assert moved("magnet_generated_tokens_total", kind="generate") == generate["usage"]["completion_tokens"]
    assert ("magnet_queue_depth", frozenset()) in after
    assert value(after, "magnet_in_flight_requests") == 1  # the scrape itself
    info = [labels for (name, labels) in after if name == "magnet_model_info"]
    assert any(dict(labels)["model"] == tiny_engine.name and dict(labels)["generate_backend"] == "torch"
               and dict(labels)["narrow_products"] == "none"  # a tiny model's products stay plain (magnet/narrow.py)
               for labels in info)
