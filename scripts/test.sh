#!/usr/bin/env bash
# Set up (idempotent), then run every test: fast ones on a tiny random Llama, slow ones
# (marked `slow`) on the real embedded model and vLLM. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The deploy checks use Debian's docker-compose and prometheus (promtool, and a real scrape).
if ! command -v promtool >/dev/null || ! command -v docker-compose >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose prometheus >/dev/null
  else
    echo "note: install docker-compose and prometheus (apt) for the deploy tests" >&2
  fi
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python -m pytest -q "$@"
