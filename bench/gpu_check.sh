#!/usr/bin/env bash
# QLoRA SFT + DPO steps on a CUDA GPU at ~0.5B, ~1B and ~7B parameters through the project's
# training code: peak GPU memory next to training/hardware.py's estimate, and tokens/s.
# Budget: under 8 minutes on one H100/H200-class GPU. Needs the project installed
# (bash scripts/setup.sh) and the bundled SmolLM2 package (its tokenizer). Extra arguments go
# to bench/gpu_check.py (--sizes 0.5B,1B --steps 4 --out FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec timeout 480 "$PYTHON" -m bench.gpu_check "$@"
