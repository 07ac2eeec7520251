#!/usr/bin/env bash
# Install (idempotent), curate the bundled demo corpus, then fine-tune on it: runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/curate all configs/demo.yaml --out runs/demo "$@"
