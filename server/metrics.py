"""Prometheus series of the service, all named `magnet_*`.

They live in prometheus-client's default registry, which is also where vLLM
registers its own `vllm:*` series when it runs in this process, so /metrics
exposes both. Metric objects are module globals (a registry refuses a name
twice), shared by every app built in the process.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, Info, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768)

REQUESTS = Counter("magnet_requests", "HTTP requests by route and status", ["route", "status"])
REQUEST_LATENCY = Histogram(
    "magnet_request_duration_seconds", "HTTP request latency by route", ["route"], buckets=LATENCY_BUCKETS
)
STAGE_LATENCY = Histogram(
    "magnet_stage_duration_seconds",
    "Time per request in each stage: queue (waiting for the worker), tokenize, model, prefill (decodes)",
    ["stage", "kind"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram("magnet_batch_size", "Requests per worker batch (kind=decode: rows per decode step)",
                       ["kind"], buckets=SIZE_BUCKETS)
BATCH_TOKENS = Histogram("magnet_batch_tokens", "Input tokens per worker batch", ["kind"], buckets=TOKEN_BUCKETS)
PROMPT_TOKENS = Counter("magnet_prompt_tokens", "Input tokens processed", ["kind"])
GENERATED_TOKENS = Counter("magnet_generated_tokens", "Tokens generated (infill and generate)", ["kind"])
QUEUE_DEPTH = Gauge("magnet_queue_depth", "Requests waiting for the model worker")
RUNNING = Gauge("magnet_running_decodes", "Infill and generate requests in the running decode batch")
IN_FLIGHT = Gauge("magnet_in_flight_requests", "HTTP requests being served")
CANCELLED = Counter("magnet_cancelled", "Requests whose client left before the answer; their work stopped",
                    ["kind"])
BACKEND_RESTARTS = Counter("magnet_backend_restarts", "Restarts of a dead generation engine (tries)")
REJECTED = Counter("magnet_rejected", "Requests refused because the queue was full", ["kind"])
MODEL_INFO = Info("magnet_model", "The served model, adapter and backends")
MODEL_DTYPE = Gauge("magnet_model_dtype", "1 for each served model and backend, labelled with the dtype it runs in",
                    ["model", "backend", "dtype"])


def render() -> tuple[bytes, str]:
    """The exposition text of the default registry, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
