"""The server's settings: environment variables `MAGNET_*`, mirrored by `magnet serve` flags."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAGNET_", frozen=True, extra="ignore")

    # The model (see magnet.loading.ModelSpec).
    model: str | None = Field(None, description="local checkpoint dir; unset = the embedded SmolLM2")
    adapter: str | None = Field("default", description="adapter dir, 'default' or 'none'")
    adapters: dict[str, str] = Field(default_factory=dict, description="more models to serve: {NAME: adapter dir}, "
                                     "each on the same base and picked by a request's `model`; with any, the "
                                     "base is served too (every one is a full copy of the weights)")
    device: str | None = None
    dtype: str | None = None
    max_length: int = Field(2048, ge=8, description="token limit per input")
    narrow_products: str = Field("auto", description="fp32 CPU models: the kernels of products with few rows "
                                 "(magnet/narrow.py): auto (measured at load), none (all plain fp32) or "
                                 "tiers such as bf16<=3,packed<=32")
    heads: str | None = Field("default", description="tagging heads dir, 'default' or 'none'")
    max_runtime_adapters: int = Field(0, ge=0, description="adapters POST /v1/load_lora_adapter may have loaded "
                                      "at once; 0 (the default) turns the route off (each load is a copy of the "
                                      "model's weights, from a folder on the server)")

    # HTTP.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = Field(None, description="when set, every route but probes/metrics/docs needs "
                                                 "'Authorization: Bearer KEY'")
    api_key_file: str | None = Field(None, description="read the API key from this file (not visible in ps)")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    body_timeout_s: float = Field(30.0, gt=0, description="a request body not fully sent by then: 408")
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="request line + headers; more: 431, closed")
    header_timeout_s: float = Field(10.0, gt=0, description="request line + headers not fully sent by then: "
                                                            "the connection is closed")
    graceful_shutdown_s: float = Field(30.0, gt=0, description="on SIGTERM, in-flight requests get this long")

    # The model worker's queue and dynamic batcher.
    max_batch_tokens: int = Field(2048, ge=1, description="token budget of one model call: an embed/tag batch, "
                                                          "a slice of a bigger request, the prefill of joining "
                                                          "decodes")
    max_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits for company")
    max_queue: int = Field(256, ge=1, description="queued requests before 429")
    max_client_batch_size: int = Field(2048, ge=1, description="inputs one embeddings or rerank request may bring "
                                       "(413 above; GET /info reports it); the worker runs them in slices")
    max_request_tokens: int = Field(65536, ge=1, description="one request's price, 413 above: input tokens, plus "
                                                             "rows x max_tokens of every decode it asks for")
    max_queued_tokens: int = Field(262144, ge=1, description="tokens of work waiting for the model before 429")
    max_queue_wait_s: float = Field(5.0, gt=0, description="estimated wait (work queued ahead / measured drain "
                                                           "rate) before 429")
    retry_after_s: float = Field(1.0, gt=0, description="Retry-After sent with 429")
    # The running decode batch (infill, and generate on the torch backend).
    max_running_rows: int = Field(64, ge=1, description="decode rows stepping together; more wait in the queue")
    max_running_tokens: int = Field(65536, ge=1, description="context + new tokens of the running decodes "
                                                             "(the KV cache); more wait in the queue")

    # Generation.
    generate_backend: Literal["auto", "vllm", "torch"] = "auto"
    vllm_adapters: Literal["auto", "lora", "torch"] = Field(
        "auto", description="with vLLM, how named adapters and the base generate: as LoRAs per request on the "
                            "one vLLM engine (lora), or on the torch backend of their own engine (torch); auto = "
                            "lora on GPUs, torch on CPU, where vLLM's LoRA layers slow every request ~3x "
                            "(bench/bench_lora.py)")
    vllm_kv_cache_gb: float = Field(1.0, gt=0, description="vLLM KV-cache space (GiB)")
    vllm_max_model_len: int = Field(2048, ge=16, description="vLLM max sequence length")
    # Big models on GPUs (the defaults are vLLM's own; see docs/deploy.md).
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="GPUs each layer is split over (vLLM)")
    vllm_pipeline_parallel_size: int = Field(1, ge=1, description="GPUs the layers are divided among (vLLM)")
    vllm_gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="share of each GPU's memory vLLM may use, the KV cache sized to fill it "
                                      "(replaces vllm_kv_cache_gb); unset = the KV cache is vllm_kv_cache_gb")
    vllm_quantization: str | None = Field(None, description="vLLM quantization method (awq, gptq, fp8, ...); "
                                                            "unset = the checkpoint's own, if any")

    @field_validator("narrow_products")
    @classmethod
    def check_narrow_products(cls, value: str) -> str:
        from magnet.narrow import Tiers

        Tiers.parse(value)  # its ValueError names the forms
        return value

    @field_validator("adapters")
    @classmethod
    def check_adapter_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, directory in value.items():
            problem = adapter_name_problem(name) or (None if directory.strip() else "its adapter dir is empty")
            if problem:
                raise ValueError(f"named adapter {name!r}: {problem}; give each as NAME=DIR "
                                 "(e.g. --adapter legal=/ckpt/legal)")
        return value


MAX_MODEL_ID_CHARS = 128  # a served model's id: every 404 lists them all


def adapter_name_problem(name: str) -> str | None:
    """Why `name` cannot be a served model id, or None. (Clashes with the loaded models' own
    names are found once they are loaded: server/model_ids.py.)"""
    from magnet.server.model_ids import MODEL_ALIAS

    if not name.strip() or name != name.strip():
        return "a name must be non-empty, without leading or trailing spaces"
    if "=" in name:
        return "a name cannot hold '='"
    if len(name) > MAX_MODEL_ID_CHARS or not name.isprintable():
        return f"a name is at most {MAX_MODEL_ID_CHARS} printable characters"
    if name == MODEL_ALIAS:
        return f"{MODEL_ALIAS!r} is the alias of the default model"
    return None
