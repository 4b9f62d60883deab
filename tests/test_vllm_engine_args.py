"""`magnet serve`'s vLLM flags reach vLLM's AsyncEngineArgs (no engine is started).

vLLM is part of the service's install (scripts/install-vllm.sh): a failed import
fails these tests rather than skipping them.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pytest

from magnet.loading import ModelSpec
from magnet.server import cli
from magnet.server.settings import Settings
from magnet.server.vllm_backend import GIB, engine_args

SPEC = ModelSpec(device="cpu", dtype="float32")
BIG_MODEL_FIELDS = {"tensor_parallel_size", "pipeline_parallel_size", "gpu_memory_utilization", "quantization"}


@pytest.fixture(autouse=True)
def model_dir(tmp_path, monkeypatch):
    """A local checkpoint dir: with HF_HUB_OFFLINE (as the test command sets it) vLLM would
    otherwise read the path as a hub repo id."""
    path = tmp_path / "llama-2-7b+adapter"
    path.mkdir()
    monkeypatch.setattr(sys.modules[__name__], "MODEL_DIR", path)
    return path


MODEL_DIR = Path("llama-2-7b+adapter")


def args_for(*argv: str):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    settings = cli.settings_from(parser.parse_args(list(argv)))
    return engine_args(MODEL_DIR, "llama-2-7b+adapter", settings, SPEC)


def vllm_defaults() -> dict:
    from vllm.engine.arg_utils import AsyncEngineArgs

    return {f.name: f.default for f in dataclasses.fields(AsyncEngineArgs) if f.name in BIG_MODEL_FIELDS}


def test_the_big_model_flags_reach_the_engine_args(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(f"MAGNET_{name.upper()}", raising=False)
    args = args_for("--vllm-tensor-parallel-size", "4", "--vllm-pipeline-parallel-size", "2",
                    "--vllm-gpu-memory-utilization", "0.85", "--vllm-quantization", "awq",
                    "--vllm-max-model-len", "4096")
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (4, 2)
    assert args.gpu_memory_utilization == 0.85 and args.quantization == "awq" and args.max_model_len == 4096
    assert args.kv_cache_memory_bytes is None  # vLLM sizes the KV cache from the memory share
    assert args.model == str(MODEL_DIR) and args.served_model_name == "llama-2-7b+adapter"


def test_the_environment_reaches_them_too(monkeypatch):
    monkeypatch.setenv("MAGNET_VLLM_TENSOR_PARALLEL_SIZE", "8")
    monkeypatch.setenv("MAGNET_VLLM_QUANTIZATION", "fp8")
    args = args_for()
    assert args.tensor_parallel_size == 8 and args.quantization == "fp8"


def test_unset_they_are_vllms_defaults_and_the_kv_cache_is_the_cpu_size(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(f"MAGNET_{name.upper()}", raising=False)
    args = args_for("--vllm-kv-cache-gb", "2")
    chosen = {name: getattr(args, name) for name in BIG_MODEL_FIELDS}
    assert chosen == vllm_defaults() and chosen["tensor_parallel_size"] == 1
    assert args.kv_cache_memory_bytes == 2 * GIB and args.dtype == "float32" and args.max_model_len == 2048


def test_every_setting_has_one_flag_and_every_flag_one_setting():
    fields = [field for field, _, _ in cli.FLAGS.values()]
    assert len(fields) == len(set(fields))
    # --adapter (DIR or NAME=DIR, repeatable) is the one flag that fills two settings
    assert set(fields) | {"adapter", "adapters"} == set(Settings.model_fields)
    assert not {"adapter", "adapters"} & set(fields)
    for flag, (field, _, _) in cli.FLAGS.items():
        assert flag == "--" + field.replace("_", "-")


def test_loras_served_beside_the_merged_model_turn_on_multi_lora_sized_for_all():
    args = engine_args(MODEL_DIR, "llama-2-7b+adapter", Settings(), SPEC, lora_ranks=[128, 64, 68])
    assert args.enable_lora and args.max_loras == 3 and args.max_cpu_loras == 3
    assert args.max_lora_rank == 128  # the smallest bound vLLM accepts that holds the largest
    assert engine_args(MODEL_DIR, None, Settings(), SPEC, lora_ranks=[130]).max_lora_rank == 256
    plain = engine_args(MODEL_DIR, "llama-2-7b+adapter", Settings(), SPEC)
    assert not plain.enable_lora  # no LoRA layers (they cost speed) when nothing needs them


def test_the_lora_rank_bound_is_vllms_next_allowed_value():
    from magnet.server.vllm_backend import lora_rank_bound

    assert [lora_rank_bound(r) for r in (4, 8, 9, 64, 65, 128, 129)] == [8, 8, 16, 64, 128, 128, 256]
    with pytest.raises(ValueError, match="--generate-backend torch"):
        lora_rank_bound(600)
