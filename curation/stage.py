"""What a pipeline stage is: a named function from records to (kept, rejected).

Like distilabel's steps, a stage declares the columns it reads and writes; `Stage.__call__`
checks them before and after running and checks that no row was lost or invented, so a stage
bug fails loudly instead of silently shifting rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA


@dataclass
class StageResult:
    kept: pl.DataFrame
    rejected: pl.DataFrame  # REJECT_SCHEMA
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # stage-specific figures for stats.json

    def stats(self, name: str, rows_in: int) -> dict:
        reasons = (
            self.rejected.group_by("reason").len().sort("len", descending=True)
            if self.rejected.height
            else pl.DataFrame({"reason": [], "len": []})
        )
        return {
            "stage": name,
            "in": rows_in,
            "out": self.kept.height,
            "removed": self.rejected.height,
            "removed_by_reason": dict(zip(reasons["reason"].to_list(), reasons["len"].to_list())),
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


class StageError(RuntimeError):
    """A stage broke its contract (missing columns, lost rows): a bug, never bad input."""


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[pl.DataFrame], StageResult]
    reads: tuple[str, ...] = tuple(RECORD_SCHEMA)
    writes: tuple[str, ...] = ()

    def __call__(self, records: pl.DataFrame) -> StageResult:
        missing = [c for c in self.reads if c not in records.columns]
        if missing:
            raise StageError(f"stage {self.name}: input lacks columns {missing}")
        start = time.perf_counter()
        result = self.run(records)
        result.seconds = time.perf_counter() - start
        absent = [c for c in (*RECORD_SCHEMA, *self.writes) if c not in result.kept.columns]
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


def split_rejects(
    records: pl.DataFrame,
    stage: str,
    reason: pl.Expr,
    detail: pl.Expr | None = None,
    duplicate_of: pl.Expr | None = None,
) -> StageResult:
    """Split records on a per-row reason expression (null = keep) into a StageResult."""
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
