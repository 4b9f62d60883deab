#!/usr/bin/env bash
# Set up (idempotent), then run every test: fast ones on a tiny random Llama, slow ones
# (marked `slow`) on the real embedded model and vLLM. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The deploy checks use Debian's docker-compose, prometheus (promtool, and a real scrape) and
# kubernetes-client (kubectl kustomize); each is installed only when its command is missing.
packages=""
command -v promtool >/dev/null || packages="$packages prometheus"
command -v docker-compose >/dev/null || packages="$packages docker-compose"
command -v kubectl >/dev/null || packages="$packages kubernetes-client"
if [ -n "$packages" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # shellcheck disable=SC2086
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  else
    echo "note: install$packages (apt) for the deploy tests" >&2
  fi
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python -m pytest -q "$@"
