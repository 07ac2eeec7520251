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

import polars as pl

from curation.dedup.common import split_duplicates
from curation.stage import Stage, StageResult
from curation.text import text_view
from schemas.config import ExactDedup
from schemas.record import RECORD_SCHEMA

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


def build_exact_stage(cfg: ExactDedup) -> Stage:
    detail = f"same text after normalising {', '.join(cfg.normalize) or 'nothing'}"

    def run(records: pl.DataFrame) -> StageResult:
        text = pl.col("text")
        # The streaming engine normalises morsels on all cores; a frame op would use one.
        roots = (
            records.lazy()
            .select(normalised_text(cfg).alias("text"))
            .select(pl.when(text.str.strip_chars() != "").then(text.hash(HASH_SEED)).alias("key"))
            .with_row_index("row")
            .select(pl.when(pl.col("key").is_null()).then("row").otherwise(pl.col("row").first().over("key")))
            .collect(engine="streaming")
            .to_series()
            .to_numpy()
        )
        return split_duplicates(records, STAGE, "exact_duplicate", roots, detail)

    return Stage(STAGE, run, reads=tuple(RECORD_SCHEMA))
