"""The embeddings semantic dedup computed, kept for the run's later steps (select's diversity guard).

Semantic dedup embeds every record; select embeds the records dedup kept again, with the same
encoder and view by default (re-encoding was ~90% of select's time on 52k Alpaca rows). When the
plan sees both with the same encoder settings it hands semantic dedup a `VectorStore`: the kept
records' vectors go to a folder under RUN_DIR/.checkpoints (part of semantic dedup's checkpoint,
so a resumed run still finds them; a checkpoint without them is recomputed), keyed by record id.

A vector is reused only when it is the one encoding the reader's text would give: the same
settings (encoder identity, view, max_seq_length) and, per record, the same text - a digest of
the text dedup embedded is stored with it. Dedup leaves shared lines (preambles) out of what it
embeds and select does not, so such a record's digest differs and it is encoded again; so is a
record missing from the store (never embedded, kept by a later rule) or any record when the
store is absent. The static encoder's vectors do not depend on the batch a text is encoded in;
a transformer's differ by float rounding between batches (padding), as re-encoding would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from curation.core.checkpoint import CHECKPOINTS
from curation.core.corpus import Source, take
from curation.dedup.encoders import encoder_identity
from schemas.base import TextView

SETTINGS, KEYS, VECTORS = "settings.json", "keys.parquet", "vectors.f32"
VECTORS_DIR = f"{CHECKPOINTS}/dedup_semantic.vectors"  # under RUN_DIR: semantic dedup's vectors for select
WRITE_ROWS = 8192  # kept records whose vectors and texts are read at a time when storing


class Embedded(Protocol):
    """What decides an embedding: dedup.semantic and select.diversity both say it."""

    view: TextView
    model: str | None
    max_seq_length: int | None


def encoder_settings(cfg: Embedded) -> dict:
    """Two configs whose settings are equal embed a text to the same vector."""
    return {"view": cfg.view, "model": encoder_identity(cfg.model), "max_seq_length": cfg.max_seq_length}


def text_digests(texts: list[str]) -> list[bytes]:
    return [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]


class VectorStore:
    """Record id -> the vector of its text, in one folder: settings.json, keys.parquet (id,
    digest of the text embedded, row) and vectors.f32 (rows of float32)."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir

    def write(
        self, settings: dict, records: Source, rows: np.ndarray, vectors: Callable[[np.ndarray], np.ndarray],
        texts: Callable[[np.ndarray], list[str]],
    ) -> None:
        """Store `rows` (sorted) of `records`: their ids, `vectors(rows)` and a digest of
        `texts(rows)` (the texts those vectors embed). Written aside and renamed into place, so
        a killed run leaves the old store or the new one."""
        partial = self.dir.with_name(self.dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        ids: list[str] = []
        digests: list[bytes] = []
        dim = 0
        with (partial / VECTORS).open("wb") as f:
            for lo in range(0, len(rows), WRITE_ROWS):
                at = rows[lo : lo + WRITE_ROWS]
                block = np.ascontiguousarray(vectors(at), np.float32)
                dim = block.shape[1]
                f.write(block.tobytes())
                ids += take(records, at, "id").to_list()
                digests += text_digests(texts(at))
        keys = pl.DataFrame({"id": ids, "digest": digests}, schema={"id": pl.String, "digest": pl.Binary})
        keys.with_row_index("row").write_parquet(partial / KEYS)
        (partial / SETTINGS).write_text(json.dumps({**settings, "dim": dim, "rows": len(ids)}) + "\n")
        shutil.rmtree(self.dir, ignore_errors=True)
        partial.rename(self.dir)

    def lookup(self, settings: dict, ids: list[str], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found, vectors): which of `ids` have a stored vector of exactly their text under
        these settings, and those vectors (in the order of the found ones)."""
        found = np.zeros(len(ids), bool)
        try:
            stored = json.loads((self.dir / SETTINGS).read_text())
        except (OSError, ValueError):
            return found, np.zeros((0, 0), np.float32)
        dim, count = stored.pop("dim"), stored.pop("rows")
        if stored != settings or not count:
            return found, np.zeros((0, dim), np.float32)
        wanted = pl.DataFrame({"id": ids, "digest": text_digests(texts)}, schema={"id": pl.String, "digest": pl.Binary})
        hits = (
            wanted.with_row_index("at")
            .join(pl.read_parquet(self.dir / KEYS), on=["id", "digest"], how="inner")
            .unique("at", keep="first")
            .sort("at")
        )
        found[hits["at"].to_numpy()] = True
        mapped = np.memmap(self.dir / VECTORS, np.float32, "r", shape=(count, dim))
        try:
            return found, np.asarray(mapped[hits["row"].to_numpy().astype(np.int64)])
        finally:
            del mapped
