"""Records as the report shows them: lazily scanned parquet, rows at positions, excerpts of
their text, numbers and shares formatted for tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

EXCERPT = 300  # characters of a record shown in tables


CLUSTER_EXCERPT = 700  # characters per text in the side-by-side duplicate view


def scan(path: Path) -> pl.LazyFrame | None:
    return pl.scan_parquet(path) if path.is_file() else None


def num(value: Any) -> str:
    """Integers with thousands separators, floats with 3 significant digits, None as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def excerpt(text: str | None, limit: int = EXCERPT) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def record_text(row: dict) -> str:
    """A record as one readable text: raw text, turns as `[role] content`, or the input line."""
    if row.get("text"):
        return row["text"]
    parts = [f"[{m['role']}] {m['content']}" for m in row.get("messages") or []]
    for side in ("chosen", "rejected"):
        parts += [f"[{side}] {m['content']}" for m in row.get(side) or []]
    return "\n".join(parts) if parts else (row.get("raw") or "")


def example(row: dict, limit: int = EXCERPT) -> dict:
    return {
        "id": row.get("id"),
        "source": row.get("source"),
        "stage": row.get("stage"),
        "reason": row.get("reason"),
        "detail": row.get("detail"),
        "duplicate_of": row.get("duplicate_of"),
        "kind": row.get("kind"),
        "excerpt": excerpt(record_text(row), limit),
    }


def rows_at(frame: pl.LazyFrame, positions: list[int]) -> list[dict]:
    if not positions:
        return []
    # Streaming: the whole file is read for a few rows, but in batches, not into memory at once.
    found = frame.with_row_index("_pos").filter(pl.col("_pos").is_in(positions)).collect(engine="streaming")
    return found.to_dicts()


def records_by_id(kept: pl.LazyFrame | None, rejected: pl.LazyFrame | None, ids: list[str]) -> dict[str, dict]:
    """Records for `ids`, from kept.parquet, else from rejected.parquet (removed by a later stage)."""
    found: dict[str, dict] = {}
    for frame, status in ((kept, "kept"), (rejected, "removed later")):
        missing = [i for i in ids if i not in found]
        if frame is None or not missing:
            continue
        for row in frame.filter(pl.col("id").is_in(missing)).collect(engine="streaming").to_dicts():
            found.setdefault(row["id"], {**example(row, CLUSTER_EXCERPT), "status": status})
    return found
