"""`magnet serve`: flags mirror the MAGNET_* settings (a flag wins over its variable).

    magnet serve                                   # embedded SmolLM2 + default adapter, 127.0.0.1:8000
    magnet serve --model /ckpt/llama --adapter runs/magnet --host 0.0.0.0 --api-key $KEY
"""
from __future__ import annotations

import argparse

from magnet.cli import add_flag_table, given_flags
from magnet.server.settings import Settings

FLAGS = {  # flag -> (settings field, type, help)
    "--model": ("model", str, "local HF checkpoint dir (default: the embedded SmolLM2-135M-Instruct)"),
    "--adapter": ("adapter", str, "adapter dir, 'default' (shipped) or 'none'"),
    "--heads": ("heads", str, "tagging heads dir, 'default' or 'none'"),
    "--device": ("device", str, "cpu, cuda, cuda:1 ... (default: cuda if available)"),
    "--dtype": ("dtype", str, "float32, bfloat16 or float16 (default: bf16 on CUDA, fp32 on CPU)"),
    "--max-length": ("max_length", int, "token limit per input (default 2048)"),
    "--host": ("host", str, "bind address (default 127.0.0.1; 0.0.0.0 in containers)"),
    "--port": ("port", int, "port (default 8000)"),
    "--api-key": ("api_key", str, "require 'Authorization: Bearer KEY' (visible in ps: prefer --api-key-file)"),
    "--api-key-file": ("api_key_file", str, "read the API key from this file"),
    "--body-timeout-s": ("body_timeout_s", float, "seconds to receive a request body (408 after; default 30)"),
    "--graceful-shutdown-s": ("graceful_shutdown_s", float, "on SIGTERM, seconds for in-flight requests (30)"),
    "--max-request-tokens": ("max_request_tokens", int, "input tokens per request (413 above; default 65536)"),
    "--max-queued-tokens": ("max_queued_tokens", int, "input tokens waiting before 429 (default 262144)"),
    "--max-body-bytes": ("max_body_bytes", int, "request body limit (413 above)"),
    "--max-batch-tokens": ("max_batch_tokens", int, "token budget of one embed/tag batch (default 8192)"),
    "--max-wait-ms": ("max_wait_ms", float, "how long a batch waits for more requests (default 5)"),
    "--max-queue": ("max_queue", int, "queued requests before 429 (default 256)"),
    "--generate-backend": ("generate_backend", str, "vllm, torch or auto (default: vllm if it imports)"),
    "--vllm-kv-cache-gb": ("vllm_kv_cache_gb", float, "vLLM KV-cache space in GiB (default 1.0)"),
    "--vllm-max-model-len": ("vllm_max_model_len", int, "vLLM max sequence length (default 2048)"),
    "--vllm-tensor-parallel-size": ("vllm_tensor_parallel_size", int, "GPUs each layer is split over (default 1)"),
    "--vllm-pipeline-parallel-size": ("vllm_pipeline_parallel_size", int,
                                      "GPUs the layers are divided among (default 1)"),
    "--vllm-gpu-memory-utilization": ("vllm_gpu_memory_utilization", float, "share of each GPU's memory for "
                                      "vLLM, KV cache sized to fill it (replaces --vllm-kv-cache-gb)"),
    "--vllm-quantization": ("vllm_quantization", str, "vLLM quantization: awq, gptq, fp8, ... (default: none)"),
    "--max-running-rows": ("max_running_rows", int, "decode rows stepping together (default 64)"),
    "--max-running-tokens": ("max_running_tokens", int, "KV-cache tokens of the running decodes (default 65536)"),
    "--retry-after-s": ("retry_after_s", float, "Retry-After sent with 429 (default 1)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag_table(parser, FLAGS, choices={"generate_backend": ["auto", "vllm", "torch"]}, env_prefix="MAGNET_")


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment first, then the flags that were given."""
    return Settings(**given_flags(args, FLAGS))


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from magnet.server.app import create_app

    settings = settings_from(args)
    app = create_app(settings)
    # uvicorn handles SIGTERM: stop accepting, let in-flight requests finish, then the
    # app's lifespan drains the model queue.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=settings.graceful_shutdown_s)
    return 0
