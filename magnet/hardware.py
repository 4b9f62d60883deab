"""What the machine computes fast, detected once: the one place every dtype default is decided.

bf16 is the default where the hardware multiplies it natively: CUDA GPUs that support it, and
CPUs with AMX or AVX512-BF16 (oneDNN runs a bf16 matmul several times faster than fp32 there).
On other CPUs bf16 is emulated and slower than fp32, so fp32 stays. `--dtype` overrides.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

# /proc/cpuinfo flags of CPUs whose matrix units take bf16 natively
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell cheaply, keep fp32
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use float32, bfloat16 or float16") from None


def default_dtype(device: torch.device) -> torch.dtype:
    """The fast dtype of `device`: bf16 (fp16 on old GPUs) on CUDA, bf16 on CPUs with native bf16,
    fp32 on every other CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


# What a `--dtype` flag says, for every command that takes one.
DTYPE_HELP = "float32, bfloat16 or float16 (default: bf16 on CUDA and on CPUs with native bf16, else fp32)"


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bfloat16": how the API, logs and metrics name a dtype."""
    return str(dtype).removeprefix("torch.")
