#!/usr/bin/env bash
# Install (idempotent) and curate the bundled demo corpus into runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/curate run configs/demo.yaml --out runs/demo "$@"
