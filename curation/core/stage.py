"""What a pipeline stage is: a named function from records to (kept, rejected).

Every stage reads and writes whole records (schemas.record.RECORD_SCHEMA: one record type
through every stage, as in datatrove), and rejects in REJECT_SCHEMA. `Stage.__call__` checks
both schemas and that no row was lost or invented, so a stage bug fails loudly instead of
silently shifting rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from curation.core.corpus import Corpus, Source, shards
from curation.core.stats import StageStats, stage_stats
from schemas.figures import Figures, NoFigures
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA


@dataclass
class StageResult:
    kept: Source  # a Corpus when the stage read a Corpus
    rejected: Source  # REJECT_SCHEMA
    seconds: float = 0.0
    figures: Figures = field(default_factory=NoFigures)  # the stage's own, for stats.json (schemas.figures)

    def stats(self, name: str, rows_in: int) -> StageStats:
        reason = self.rejected.column("reason") if isinstance(self.rejected, Corpus) else self.rejected["reason"]
        # Most frequent first; equal counts by name, so the same run writes the same stats.
        reasons = reason.to_frame().group_by("reason").len().sort(["len", "reason"], descending=[True, False])
        by_reason = dict(zip(reasons["reason"].to_list(), reasons["len"].to_list(), strict=True))
        return stage_stats(name, rows_in, self.kept.height, by_reason, round(self.seconds, 3), self.figures)


class StageError(RuntimeError):
    """A stage broke its contract (missing columns, lost rows): a bug, never bad input."""


@dataclass(frozen=True)
class Stage:
    """`streams`: `run` reads a Corpus shard by shard (and returns Corpora). Other stages
    (export, published-version dedup) get the corpus collected into one frame, and their result
    is written back. `reads` / `writes`: the columns it needs besides the record's and those it
    adds (its line in curation/core/plan.py STEPS declares them), checked in and out."""

    name: str
    run: Callable[[Source], StageResult]
    streams: bool = False
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

    def __call__(self, records: Source) -> StageResult:
        missing = [c for c in dict.fromkeys((*RECORD_SCHEMA, *self.reads)) if c not in records.columns]
        if missing:
            raise StageError(f"stage {self.name}: input lacks columns {missing}")
        start = time.perf_counter()
        if isinstance(records, Corpus) and not self.streams:
            result = self.run(records.collect())
            result.kept, result.rejected = _written(records, result.kept), _written(records, result.rejected)
        else:
            result = self.run(records)
        result.seconds = time.perf_counter() - start
        absent = [c for c in dict.fromkeys((*RECORD_SCHEMA, *self.writes)) if c not in result.kept.columns]
        if absent:
            raise StageError(f"stage {self.name}: output lacks columns {absent}")
        if list(result.rejected.columns) != list(REJECT_SCHEMA):
            raise StageError(f"stage {self.name}: rejects do not follow REJECT_SCHEMA")
        if result.kept.height + result.rejected.height != records.height:
            raise StageError(
                f"stage {self.name}: {records.height} in but {result.kept.height} kept"
                f" + {result.rejected.height} rejected"
            )
        return result


def _written(like: Corpus, frame: Source) -> Corpus:
    if isinstance(frame, Corpus):
        return frame
    writer = like.derive(frame.schema)
    writer.write(frame)
    return writer.close()


def split_rejects(
    records: Source,
    stage: str,
    reason: pl.Series,
    detail: pl.Series | None = None,
    duplicate_of: pl.Series | None = None,
) -> StageResult:
    """Split records on per-row reasons (null = keep), details and duplicate_of ids."""

    def decide(shard: pl.DataFrame, lo: int) -> Decision:
        n = shard.height
        return (
            shard,
            reason.slice(lo, n),
            None if detail is None else detail.slice(lo, n),
            None if duplicate_of is None else duplicate_of.slice(lo, n),
        )

    return split_each(records, stage, decide)


# (the shard, possibly with updated columns; per row: reason (null = keep), detail, duplicate_of)
Decision = tuple[pl.DataFrame, pl.Series, pl.Series | None, pl.Series | None]


def split_each(records: Source, stage: str, decide: Callable[[pl.DataFrame, int], Decision]) -> StageResult:
    """Split records shard by shard on what decide(shard, first row) says about each row.

    A frame is one shard; a corpus is split into two new corpora, one shard in memory at a time."""
    if isinstance(records, pl.DataFrame):
        return _split(*decide(records, 0), stage)
    kept, rejected = records.derive(), records.derive(REJECT_SCHEMA)
    for shard, lo in shards(records):
        part = _split(*decide(shard, lo), stage)
        kept.write(part.kept)
        rejected.write(part.rejected)
    return StageResult(kept=kept.close(), rejected=rejected.close())


def _split(
    records: pl.DataFrame,
    reason: pl.Series,
    detail: pl.Series | None,
    duplicate_of: pl.Series | None,
    stage: str,
) -> StageResult:
    marked = records.with_columns(
        reason.alias("_reason"),
        (detail if detail is not None else pl.lit(None, pl.String)).alias("_detail"),
        (duplicate_of if duplicate_of is not None else pl.lit(None, pl.String)).alias("_dup"),
    )
    dropped = marked.filter(pl.col("_reason").is_not_null())
    kept = marked.filter(pl.col("_reason").is_null()).drop("_reason", "_detail", "_dup")
    return StageResult(kept=kept, rejected=to_rejects(dropped, stage))


def to_rejects(dropped: pl.DataFrame, stage: str) -> pl.DataFrame:
    """Rejects from records carrying `_reason`, `_detail` and `_dup` columns."""
    return dropped.select(
        pl.col("id"),
        pl.col("source"),
        pl.lit(stage).alias("stage"),
        pl.col("_reason").cast(pl.String).alias("reason"),
        pl.col("_detail").cast(pl.String).alias("detail"),
        pl.col("_dup").cast(pl.String).alias("duplicate_of"),
        *(pl.col(c) for c in ("kind", "text", "messages", "chosen", "rejected", "meta")),
        pl.lit(None, pl.String).alias("raw"),
    ).cast(REJECT_SCHEMA)  # type: ignore[arg-type]
