"""The server with vLLM serving /v1/generate on the embedded model (slow: starts a vLLM engine)."""
from __future__ import annotations

import httpx
import pytest

pytest.importorskip("vllm", exc_type=ImportError)

from magnet.server.app import create_app  # noqa: E402
from magnet.server.settings import Settings  # noqa: E402
from magnet.server.testing import serve_on_loopback  # noqa: E402

pytestmark = pytest.mark.slow


def test_vllm_serves_generate_and_its_metrics_show_on_the_servers(tmp_path):
    settings = Settings(generate_backend="vllm", device="cpu", dtype="float32", heads="none",
                        vllm_kv_cache_gb=0.5, vllm_max_model_len=512)
    with serve_on_loopback(create_app(settings), ready_timeout=600) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["backends"]["generate"] == "vllm" and health["backends"]["embed"] == "torch"
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["backends"]["generate"] == "vllm"
        answer = httpx.post(f"{url}/v1/generate", json={"prompt": "The capital of France is", "max_tokens": 8},
                            timeout=120).json()
        assert answer["usage"]["completion_tokens"] >= 1 and answer["text"]
        body = {"prompt": "The capital of France is", "max_tokens": 8, "stream": True}
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=120) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and '"finish_reason":"' in events[-2]
        metrics = httpx.get(f"{url}/metrics").text
        assert "vllm:generation_tokens_total" in metrics and "magnet_requests_total" in metrics
