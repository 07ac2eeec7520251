"""Text encoders for semantic dedup (and the jury's distillation): L2-normalised float32 rows.

Two kinds, both local, never from a hub:
- a **static** model (model2vec): one vector per token, averaged; no transformer runs, so it
  embeds thousands of texts a second on a CPU. The default, `minilm-static`, is distilled from the
  bundled all-MiniLM-L6-v2 on first use into the model cache (schemas.bundled), with the common
  direction of running text that this encoder subtracts from every vector (a folder's
  `common_direction.npy`; a model2vec folder without one is used as it is).
- a **transformer** (sentence-transformers), on CUDA when available: the bundled
  `all-MiniLM-L6-v2` or any local sentence-transformers directory.

`model` in the config is one of those two names or a local directory; a directory whose
config.json says `"model_type": "model2vec"` is a static model, any other a sentence-transformers one.
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from schemas.bundled import (
    COMMON_DIRECTION,
    MINILM_NAME,
    MINILM_STATIC,
    MINILM_STATIC_NAME,
    SEMANTIC_BUNDLED,
    bundled_minilm_dir,
    minilm_static_dir,
)
from schemas.config import ConfigError

log = logging.getLogger(__name__)

STATIC_BATCH = 1024
TRANSFORMER_BATCH = 64


class Encoder(Protocol):
    identity: str  # stored with embeddings: a published index made by another model is rebuilt
    dim: int

    def encode(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray: ...


class StaticEncoder:
    def __init__(self, path: Path, identity: str, max_tokens: int | None) -> None:
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(path)
        self.identity, self.max_tokens = identity, max_tokens
        self.dim = int(self.model.dim)
        common = path / COMMON_DIRECTION
        self.common = np.load(common).astype(np.float32) if common.is_file() else None
        if self.common is not None and self.common.shape != (self.dim,):
            raise ValueError(f"{common} has shape {self.common.shape}, the model has {self.dim} dimensions")

    def encode(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # One process: the stage already runs on every core (tokenizers threads), and forked
        # encoder workers inside a Ray worker or a Prefect task only add start-up time.
        vectors = _normalised(self.model.encode(
            texts, max_length=self.max_tokens, batch_size=batch_size or STATIC_BATCH,
            show_progress_bar=progress, use_multiprocessing=False,
        ))
        return vectors if self.common is None else _normalised(vectors - self.common)


class TransformerEncoder:
    def __init__(self, path: Path, identity: str, max_tokens: int | None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"dedup.semantic.model: cannot load {path} as a sentence-transformers model ({e})") from e
        # Tokens read per text, never above the model's own limit: cost grows with it, and the
        # beginning of a text is enough to spot duplicates.
        self.model.max_seq_length = min(max_tokens or self.model.max_seq_length, self.model.max_seq_length)
        self.identity = identity
        self.dim = int(self.model.get_embedding_dimension() or 0)

    def encode(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # sentence-transformers sorts the texts by length before batching (less padding).
        vectors = self.model.encode(
            texts, batch_size=batch_size or TRANSFORMER_BATCH, normalize_embeddings=True, show_progress_bar=progress
        )
        return np.ascontiguousarray(vectors, np.float32)


def encoder_identity(model: str | None) -> str:
    """What made an embedding: a bundled name, or `path:<resolved directory>`."""
    name = model or MINILM_STATIC
    if name == MINILM_STATIC:
        return f"bundled:{MINILM_STATIC_NAME}"
    return f"bundled:{name}" if name in SEMANTIC_BUNDLED else f"path:{Path(name).expanduser().resolve()}"


@lru_cache(maxsize=4)
def load_encoder(model: str | None = None, max_tokens: int | None = 128) -> Encoder:
    """The encoder a config names (None = the bundled static model), loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers imports huggingface_hub
    name = model or MINILM_STATIC
    identity = encoder_identity(name)
    if name == MINILM_STATIC:
        return _bundled_static(identity, max_tokens)
    if name == MINILM_NAME:
        return TransformerEncoder(bundled_minilm_dir(), identity, max_tokens)
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(f"dedup.semantic.model: {name} is neither {' nor '.join(SEMANTIC_BUNDLED)} nor a local directory")
    if is_static_model(path):
        try:
            return StaticEncoder(path, identity, max_tokens)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"dedup.semantic.model: cannot load {path} as a model2vec static model ({e})") from e
    return TransformerEncoder(path, identity, max_tokens)


def is_static_model(path: Path) -> bool:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type") == "model2vec"
    except (OSError, ValueError, AttributeError):
        return False


def _bundled_static(identity: str, max_tokens: int | None) -> StaticEncoder:
    path = minilm_static_dir()
    try:
        return StaticEncoder(path, identity, max_tokens)
    except Exception as e:  # a damaged cache fails in many ways (safetensors, json, tokenizers)
        log.warning("the cached static model in %s does not load (%s: %s); rebuilding it", path, type(e).__name__, e)
        return StaticEncoder(minilm_static_dir(rebuild=True), identity, max_tokens)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12))
