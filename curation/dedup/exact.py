"""Exact dedup: records whose view text is equal after normalisation.

Normalisation (`ExactDedup.normalize`, applied in this order): case = lowercase; punctuation =
delete unicode punctuation (\\p{P}); whitespace = collapse runs of whitespace to one space and
strip. Records are grouped on a 64-bit polars hash of the normalised text (collisions are
negligible within a run, ~n^2/2^65).

Kept rule: in every group of equal texts the earliest record in input order (row position in
the incoming frame) is kept; the others are rejected with reason `exact_duplicate` and
`duplicate_of` = its id. Records whose normalised text is empty (or only whitespace) are never
duplicates.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from curation.core.engine import Engine, LocalEngine
from curation.core.stage import Stage, StageResult
from curation.core.text import text_view
from curation.dedup.common import split_duplicates
from curation.dedup.siblings import spare_siblings
from schemas.config import ExactDedup
from schemas.figures import ExactFigures

STAGE = "dedup_exact"
HASH_SEED = 0x5EED


def normalised_text(cfg: ExactDedup) -> pl.Expr:
    """The record's view text under the configured normalisations."""
    text = text_view(cfg.view)
    if "case" in cfg.normalize:
        text = text.str.to_lowercase()
    if "punctuation" in cfg.normalize:
        text = text.str.replace_all(r"\p{P}+", "")
    if "whitespace" in cfg.normalize:
        # Only runs and non-space whitespace need replacing: far fewer matches than \s+.
        text = text.str.replace_all(r"\s{2,}|[^\S ]", " ").str.strip_chars()
    return text


def build_exact_stage(cfg: ExactDedup, engine: Engine | None = None, keep_siblings: bool = False) -> Stage:
    """`engine` computes the per-row keys by partitions (default: this process); the grouping
    by key needs only the keys (8 bytes a record). `keep_siblings`: preference sibling answers
    are never removed (curation.dedup.siblings)."""
    detail = f"same text after normalising {', '.join(cfg.normalize) or 'nothing'}"

    def keys(records: pl.DataFrame) -> pl.Series:
        text = pl.col("text")
        # The streaming engine normalises morsels on all cores; a frame op would use one.
        return (
            records.lazy()
            .select(normalised_text(cfg).alias("text"))
            .select(pl.when(text.str.strip_chars() != "").then(text.hash(HASH_SEED)).alias("key"))
            .collect(engine="streaming")
            .to_series()
        )

    def run(records: pl.DataFrame) -> StageResult:
        key = pl.concat((engine or LocalEngine()).map(keys, records, STAGE))
        roots = (
            pl.DataFrame({"key": key})
            .with_row_index("row")
            .select(pl.when(pl.col("key").is_null()).then("row").otherwise(pl.col("row").first().over("key")))
            .to_series()
            .to_numpy()
        )
        figures = ExactFigures()
        if keep_siblings:
            roots, figures.siblings_protected = spare_siblings(records, roots, engine)
        result = split_duplicates(records, STAGE, "exact_duplicate", roots, detail)
        result.figures = figures
        return result

    return Stage(STAGE, run, streams=True)


# --- published index (incremental refresh): persisted hashes, looked up by later runs -------

INDEX_HASH = "blake2b-64"  # stable across processes and library versions (polars' hash is not)


def index_settings(cfg: ExactDedup) -> dict:
    """What produced an exact index: a stored index with other settings must be rebuilt."""
    return {"view": cfg.view, "normalize": sorted(set(cfg.normalize)), "hash": INDEX_HASH}


def index_keys(records: pl.DataFrame, cfg: ExactDedup) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose normalised view text is not blank, and a stable 64-bit hash of that text.

    blake2b (8 bytes) instead of polars' hash: the keys are stored with a published version and
    compared in later processes, possibly under another polars version.
    """
    texts = records.select(normalised_text(cfg).alias("text")).to_series()
    rows = np.flatnonzero((texts.str.strip_chars() != "").fill_null(False).to_numpy())
    keys = np.fromiter(
        (int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in texts.gather(rows)),
        np.uint64,
        count=len(rows),
    )
    return rows, keys


def match_index(keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """For each key, the position of the first equal key in `index`, or -1."""
    if not len(index) or not len(keys):
        return np.full(len(keys), -1, np.int64)
    order = np.argsort(index, kind="stable")  # stable: equal keys keep their index order
    at = np.minimum(np.searchsorted(index[order], keys), len(index) - 1)
    return np.where(index[order][at] == keys, order[at], -1).astype(np.int64)
