"""Writes dashboards/magnet.json, the Grafana dashboard of the service's series.

    python deploy/grafana/build_dashboard.py     # after changing a panel here

Panels are listed as data (title, unit, PromQL) so the JSON stays consistent;
tests/test_deploy_files.py checks the JSON is this script's output and that
every magnet_* series it queries is one the server exports.

The dashboard has two variables, job and instance (multi-select, All by default),
and scoped() adds their matchers to every series a panel queries, so with several
replicas or scrape jobs the panels show the ones picked.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "magnet-prometheus"}
OUT = Path(__file__).parent / "dashboards" / "magnet.json"

# The matchers every series selector gets, one per dashboard variable.
SCOPE = 'job=~"$job", instance=~"$instance"'
# The variables' values come from a gauge without labels: it exists from the server's start,
# whereas a labelled counter has no series before its first request.
VARIABLE_SERIES = "magnet_queue_depth"
# A series name (the service's and vLLM's), with its label matchers if it has any.
SELECTOR = re.compile(r"\b(magnet_[a-z_]+|vllm:[a-z_:]+)(?:\{([^}]*)\})?")


def scoped(expr: str) -> str:
    """expr with the job and instance matchers added to every series selector."""
    return SELECTOR.sub(lambda m: f"{m[1]}{{{SCOPE}{', ' + m[2] if m[2] else ''}}}", expr)


def quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[1m])))"


# (row title, [(panel title, unit, [(PromQL, legend)])])
ROWS = [
    ("Requests", [
        ("Requests per second by route and status", "reqps",
         [("sum by (route, status) (rate(magnet_requests_total[1m]))", "{{route}} {{status}}")]),
        ("Latency p50 / p95 by route", "s",
         [(quantile(0.5, "magnet_request_duration_seconds", "route"), "p50 {{route}}"),
          (quantile(0.95, "magnet_request_duration_seconds", "route"), "p95 {{route}}")]),
        ("In flight and queued", "short",
         [("magnet_in_flight_requests", "in flight"), ("magnet_queue_depth", "queued")]),
        ("Refused (queue full, 429) per second", "reqps",
         [("sum by (kind) (rate(magnet_rejected_total[1m]))", "{{kind}}")]),
    ]),
    ("Model worker", [
        ("Stage latency p95 (queue, tokenize, model)", "s",
         [(quantile(0.95, "magnet_stage_duration_seconds", "stage, kind"), "{{stage}} {{kind}}")]),
        ("Requests per batch (mean)", "short",
         [("sum by (kind) (rate(magnet_batch_size_sum[1m])) / sum by (kind) (rate(magnet_batch_size_count[1m]))",
           "{{kind}}")]),
        ("Tokens per batch (mean)", "short",
         [("sum by (kind) (rate(magnet_batch_tokens_sum[1m])) / sum by (kind) (rate(magnet_batch_tokens_count[1m]))",
           "{{kind}}")]),
        ("Tokens per second", "short",
         [("sum by (kind) (rate(magnet_prompt_tokens_total[1m]))", "prompt {{kind}}"),
          ("sum by (kind) (rate(magnet_generated_tokens_total[1m]))", "generated {{kind}}")]),
        ("Running decodes (infill and torch generate)", "short",
         [("magnet_running_decodes", "{{instance}}")]),
        ("Rows per decode step (mean / p95)", "short",
         [('sum(rate(magnet_batch_size_sum{kind="decode"}[1m]))'
           ' / sum(rate(magnet_batch_size_count{kind="decode"}[1m]))', "mean"),
          ('histogram_quantile(0.95, sum by (le) (rate(magnet_batch_size_bucket{kind="decode"}[1m])))', "p95")]),
    ]),
    ("vLLM (when it serves /v1/generate)", [
        ("vLLM requests running / waiting", "short",
         [("vllm:num_requests_running", "running"), ("vllm:num_requests_waiting", "waiting")]),
        ("vLLM tokens per second", "short",
         [("rate(vllm:prompt_tokens_total[1m])", "prompt"), ("rate(vllm:generation_tokens_total[1m])", "generated")]),
        ("vLLM time to first token p95 / inter-token p95", "s",
         [("histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))", "TTFT"),
          ("histogram_quantile(0.95, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket[1m])))", "ITL")]),
        ("vLLM KV-cache usage", "percentunit", [("vllm:kv_cache_usage_perc", "KV cache")]),
    ]),
]


def panel(pid: int, title: str, unit: str, targets: list[tuple[str, str]], x: int, y: int) -> dict:
    return {
        "id": pid, "type": "timeseries", "title": title, "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(65 + i), "datasource": DATASOURCE, "expr": scoped(expr), "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
    }


def info_panel(pid: int, y: int) -> dict:
    return {
        "id": pid, "type": "table", "title": "Served model, adapter and backends", "datasource": DATASOURCE,
        "gridPos": {"h": 4, "w": 24, "x": 0, "y": y},
        "targets": [{"refId": "A", "datasource": DATASOURCE, "expr": scoped("magnet_model_info"), "format": "table",
                     "instant": True}],
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True,
                                                                                "__name__": True}}}],
    }


def variable(name: str, series: str) -> dict:
    """A Prometheus query variable over name's values on series; several or All may be picked."""
    query = f"label_values({series}, {name})"
    return {
        "name": name, "label": name, "type": "query", "datasource": DATASOURCE,
        "query": query, "definition": query, "refresh": 2, "sort": 1,  # refresh on time-range change
        "multi": True, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0,
    }


def dashboard() -> dict:
    panels, y, pid = [info_panel(1, 0)], 4, 2
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for k, (title, unit, targets) in enumerate(row_panels):
            panels.append(panel(pid, title, unit, targets, 12 * (k % 2), y + 8 * (k // 2)))
            pid += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    return {
        "uid": "magnet-service", "title": "Magnet service", "tags": ["magnet"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "refresh": "10s", "time": {"from": "now-30m", "to": "now"},
        "editable": True, "panels": panels, "annotations": {"list": []},
        # instance lists only the picked jobs' instances.
        "templating": {"list": [variable("job", VARIABLE_SERIES),
                                variable("instance", f'{VARIABLE_SERIES}{{job=~"$job"}}')]},
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")
