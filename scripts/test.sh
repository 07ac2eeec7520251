#!/usr/bin/env bash
# Install what the tests need (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The HTML report is tested in a real headless browser: Debian's chromium (root, or sudo).
if ! command -v chromium >/dev/null 2>&1; then
  echo "test: installing chromium (Debian package) for the report tests" >&2
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -q chromium >/dev/null || { $sudo_ apt-get update -q >/dev/null && $sudo_ apt-get install -y -q chromium >/dev/null; }
fi
# Lint first (pyproject's [tool.ruff]): a style or bug-pattern finding fails like a test.
.venv/bin/ruff check .
# Then the type checker on schemas curation flows training bench (pyproject's [tool.mypy]: its files and strictness).
.venv/bin/mypy
# Real data: tests/fixtures (shipped); files the repository may not ship are read from
# ../shared/data (CURATE_SHARED_DATA=folder elsewhere). Missing, those tests skip with their reason
# in the summary, or fail with CURATE_NO_SKIP=1 (tests/conftest.py: skip_or_fail).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# On every core, up to 4 workers (pytest-xdist; `-n 0` after the command runs in one process): the
# Ray tests share one worker (tests/conftest.py groups them), each worker starts its own Prefect server.
exec .venv/bin/python -m pytest -n auto --maxprocesses 4 --dist loadgroup "$@"
