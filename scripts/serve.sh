#!/usr/bin/env bash
# Set up (idempotent), then serve the embedded model with the default adapter on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/magnet serve "$@"
