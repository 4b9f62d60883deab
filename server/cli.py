"""`magnet serve`: flags mirror the MAGNET_* settings (a flag wins over its variable).

    magnet serve                                   # embedded SmolLM2 + default adapter, 127.0.0.1:8000
    magnet serve --model /ckpt/llama --adapter runs/magnet --host 0.0.0.0 --api-key $KEY
    magnet serve --adapter legal=/ckpt/legal --adapter med=/ckpt/med   # the default, the base, legal, med

`--adapter` takes both forms: DIR (or 'default' / 'none') sets the default model's
adapter, NAME=DIR (repeatable) adds a named model to those of MAGNET_ADAPTERS (a flag's
NAME wins over the variable's).
"""
from __future__ import annotations

import argparse
from typing import Literal, get_args, get_origin

from pydantic import ValidationError

from magnet.cli import add_flag_table, given_flags
from magnet.hardware import DTYPE_HELP
from magnet.server.settings import Settings

FLAGS = {  # flag -> (settings field, type, help)
    "--model": ("model", str, "local HF checkpoint dir (default: the embedded SmolLM2-135M-Instruct)"),
    "--heads": ("heads", str, "tagging heads dir, 'default' or 'none'"),
    "--device": ("device", str, "cpu, cuda, cuda:1 ... (default: cuda if available)"),
    "--dtype": ("dtype", str, DTYPE_HELP),
    "--max-length": ("max_length", int, "token limit per input (default 2048)"),
    "--narrow-products": ("narrow_products", str, "fp32 on CPU: kernels of few-row products (decode steps): "
                          "auto (measured at load), none (plain fp32) or e.g. bf16<=3,packed<=32"),
    "--host": ("host", str, "bind address (default 127.0.0.1; 0.0.0.0 in containers)"),
    "--port": ("port", int, "port (default 8000)"),
    "--api-key": ("api_key", str, "require 'Authorization: Bearer KEY' (visible in ps: prefer --api-key-file)"),
    "--api-key-file": ("api_key_file", str, "read the API key from this file"),
    "--body-timeout-s": ("body_timeout_s", float, "seconds to receive a request body (408 after; default 30)"),
    "--graceful-shutdown-s": ("graceful_shutdown_s", float, "on SIGTERM, seconds for in-flight requests (30)"),
    "--max-request-tokens": ("max_request_tokens", int, "one request's price: input tokens plus rows x max_tokens "
                             "(413 above; default 65536)"),
    "--max-queued-tokens": ("max_queued_tokens", int, "tokens of work waiting before 429 (default 262144)"),
    "--max-queue-wait-s": ("max_queue_wait_s", float, "estimated queue wait before 429 (default 5)"),
    "--max-body-bytes": ("max_body_bytes", int, "request body limit (413 above)"),
    "--max-header-bytes": ("max_header_bytes", int, "request line + headers limit (431 above; default 65536)"),
    "--header-timeout-s": ("header_timeout_s", float, "seconds to receive the request headers (default 10)"),
    "--max-batch-tokens": ("max_batch_tokens", int, "token budget of one model call: a batch, a slice, a prefill "
                           "(default 2048)"),
    "--max-wait-ms": ("max_wait_ms", float, "how long a batch waits for more requests (default 5)"),
    "--max-queue": ("max_queue", int, "queued requests before 429 (default 256)"),
    "--max-client-batch-size": ("max_client_batch_size", int, "inputs per embeddings/rerank request "
                                "(413 above; default 2048)"),
    "--generate-backend": ("generate_backend", str, "vllm, torch or auto (default: vllm if it imports)"),
    "--vllm-adapters": ("vllm_adapters", str, "with vLLM, named adapters generate as LoRAs on its engine (lora) "
                        "or on the torch backend (torch); default auto: lora on GPUs, torch on CPU"),
    "--vllm-kv-cache-gb": ("vllm_kv_cache_gb", float, "vLLM KV-cache space in GiB (default 1.0)"),
    "--vllm-max-model-len": ("vllm_max_model_len", int, "vLLM max sequence length (default 2048)"),
    "--vllm-tensor-parallel-size": ("vllm_tensor_parallel_size", int, "GPUs each layer is split over (default 1)"),
    "--vllm-pipeline-parallel-size": ("vllm_pipeline_parallel_size", int,
                                      "GPUs the layers are divided among (default 1)"),
    "--vllm-gpu-memory-utilization": ("vllm_gpu_memory_utilization", float, "share of each GPU's memory for "
                                      "vLLM, KV cache sized to fill it (replaces --vllm-kv-cache-gb)"),
    "--vllm-quantization": ("vllm_quantization", str, "vLLM quantization: awq, gptq, fp8, ... (default: the checkpoint's own)"),
    "--max-running-rows": ("max_running_rows", int, "decode rows stepping together (default 64)"),
    "--max-running-tokens": ("max_running_tokens", int, "KV-cache tokens of the running decodes (default 65536)"),
    "--retry-after-s": ("retry_after_s", float, "Retry-After sent with 429 (default 1)"),
    "--max-runtime-adapters": ("max_runtime_adapters", int, "adapters POST /v1/load_lora_adapter may have "
                               "loaded at once (default 0: the route is off)"),
}


def literal_choices(settings_class) -> dict[str, tuple]:
    """{field: its allowed values} for every Literal field: the Settings class is their one home."""
    return {name: get_args(field.annotation) for name, field in settings_class.model_fields.items()
            if get_origin(field.annotation) is Literal}


ADAPTER_FLAG = "--adapter"  # repeatable, two forms: it fills two settings (adapter, adapters)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag_table(parser, FLAGS, choices=literal_choices(Settings), env_prefix="MAGNET_")
    parser.add_argument(ADAPTER_FLAG, dest="adapter_entries", action="append", default=None,
                        metavar="DIR|NAME=DIR",
                        help="the default model's adapter: a dir, 'default' (shipped) or 'none' [MAGNET_ADAPTER]; "
                             "NAME=DIR (repeatable) also serves that adapter as model NAME [MAGNET_ADAPTERS]")


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment first, then the flags that were given."""
    return Settings(**given_flags(args, FLAGS), **adapter_settings(args.adapter_entries or []))


def adapter_settings(entries: list[str]) -> dict:
    """The settings the --adapter flags give: {"adapter": the last plain DIR} and
    {"adapters": {NAME: DIR}} for the NAME=DIR ones (a name given twice is an error)."""
    given: dict = {}
    named: dict[str, str] = {}
    for entry in entries:
        if "=" not in entry:
            given["adapter"] = entry
            continue
        name, directory = entry.split("=", 1)
        if name in named:
            raise SystemExit(f"{ADAPTER_FLAG} {name}=... is given twice: give each named adapter once")
        named[name] = directory
    if named:
        given["adapters"] = named
    return given


def run(args: argparse.Namespace) -> int:
    from pydantic_settings import SettingsError

    try:
        settings = settings_from(args)
    except ValidationError as exc:  # e.g. a bad NAME=DIR: refuse to start, saying which
        raise SystemExit(f"magnet serve: {exc}") from None
    except SettingsError as exc:  # a MAGNET_* variable that is not its field's type
        raise SystemExit(f"magnet serve: {exc}; a dict or list variable is JSON, e.g. "
                         'MAGNET_ADAPTERS=\'{"legal": "/ckpt/legal"}\'') from None
    try:
        server = magnet_server(settings)
    except ValueError as exc:  # a setting that fails once used, e.g. an unreadable --api-key-file
        raise SystemExit(f"magnet serve: {exc}") from None
    server.run()
    if server.service.load_error:  # a model or adapter that does not load (or fails its checks)
        raise SystemExit(f"magnet serve: the model failed to load: {server.service.load_error}")
    return 0


def magnet_server(settings: Settings):
    """uvicorn around the app, with the transport limits (server/transport.py) and the shutdown
    deadline (server/shutdown.py): on SIGTERM uvicorn stops accepting, in-flight requests get
    --graceful-shutdown-s, what is left then gets a JSON 503, and the app's lifespan drains the
    model queue. A model that fails to load stops the server (exit status 1)."""
    import uvicorn

    from magnet.server.app import create_app
    from magnet.server.shutdown import DEADLINE_MARGIN_S, MagnetServer
    from magnet.server.transport import limited_http_protocol

    app = create_app(settings)
    # access_log off: the app logs one line per request itself (magnet.access: client, request
    # id, method, path, status, milliseconds), where uvicorn's would be a second, without the id
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                            http=limited_http_protocol(settings.max_header_bytes, settings.header_timeout_s),
                            timeout_graceful_shutdown=settings.graceful_shutdown_s + DEADLINE_MARGIN_S)
    return MagnetServer(config, app.state.service)
