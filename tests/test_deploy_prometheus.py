"""A real Prometheus (Debian's package) on loopback scrapes a running server and finds magnet_ series."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from magnet.server.testing import app_with, free_port, serve_on_loopback

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "prometheus.yml"


def local_config(target: str, path: Path) -> Path:
    """deploy/'s config with the compose service name replaced by a loopback address, scraping every second."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [target]
    path.write_text(yaml.safe_dump(config))
    return path


def query(prometheus: str, promql: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def wait_for(prometheus: str, promql: str, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := query(prometheus, promql):
                return result
        except httpx.TransportError:
            pass  # Prometheus is still starting
        time.sleep(0.5)
    pytest.fail(f"Prometheus found no {promql} within {timeout:g} s")


def test_prometheus_scrapes_magnet_series(tiny_engine, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: install it with `apt-get install -y prometheus` (Debian's package)")
    app = app_with(tiny_engine)
    with serve_on_loopback(app) as server:
        assert httpx.post(f"{server}/v1/embed", json={"input": ["a fox", "a dog"]}).status_code == 200
        assert httpx.post(f"{server}/v1/generate", json={"prompt": "The", "max_tokens": 3}).status_code == 200
        port = free_port()
        config = local_config(server.removeprefix("http://"), tmp_path / "prometheus.yml")
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
        try:
            prometheus = f"http://127.0.0.1:{port}"
            [up] = wait_for(prometheus, 'up{job="magnet"} == 1')
            requests = wait_for(prometheus, 'magnet_requests_total{route="/v1/embed",status="200"}')
            assert float(requests[0]["value"][1]) >= 1
            assert wait_for(prometheus, 'magnet_stage_duration_seconds_count{stage="model",kind="embed"}')
            [info] = wait_for(prometheus, "magnet_model_info")
            assert info["metric"]["model"] == tiny_engine.name
        finally:
            process.terminate()
            process.wait(30)
