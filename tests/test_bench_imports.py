"""bench/ is run by hand, so a break found only when a benchmark is rerun: every bench module must
import (mypy checks the rest), and none may import a library of pyproject's `bench` extra at
import time (CI does not install it: such a module imports its peer inside the function that
measures it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# In a fresh interpreter: another test may already have imported a peer library (or a module).
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import bench
before = set(sys.modules)
modules = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))
for name in modules:
    importlib.import_module(f"bench.{name}")
print(json.dumps({"modules": modules, "imported": sorted({m.split(".")[0] for m in set(sys.modules) - before})}))
"""


def _bench_only_modules() -> set[str]:
    """Top-level modules of the installed distributions of the `bench` extra (none when not installed)."""
    from importlib.metadata import packages_distributions

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    dists = {canonical(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in extra}
    return {m for m, owners in packages_distributions().items() if dists & {canonical(d) for d in owners}}


def test_every_bench_module_imports_without_its_bench_only_peers() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert {"bench_semantic", "bench_pipeline", "measure"} <= set(found["modules"])  # the package was walked
    at_import = set(found["imported"]) & _bench_only_modules()
    assert not at_import, f"bench-only libraries imported at import time: {sorted(at_import)}"
