"""What the dedup stages share: turning "row i is a duplicate of row root[i]" into a StageResult."""

from __future__ import annotations

import numpy as np
import polars as pl

from curation.stage import StageResult, to_rejects
from schemas.record import RECORD_SCHEMA


def split_duplicates(
    records: pl.DataFrame, stage: str, reason: str, root: np.ndarray, detail: pl.Series | str
) -> StageResult:
    """Keep rows with root[i] == i; reject the others as duplicates of row root[i].

    `detail`: one string for every rejected row, or one entry per rejected row in row order.
    """
    dup = pl.Series(root != np.arange(records.height))
    columns = records.select(list(RECORD_SCHEMA))
    dropped = columns.filter(dup).with_columns(
        pl.lit(reason).alias("_reason"),
        (pl.lit(detail) if isinstance(detail, str) else detail).alias("_detail"),
        records["id"].gather(root).filter(dup).alias("_dup"),
    )
    return StageResult(kept=columns.filter(~dup), rejected=to_rejects(dropped, stage))


def earliest_roots(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of the edges (left[k], right[k]) over rows 0..n-1: for each row,
    the smallest row index of its component (the earliest record in input order)."""
    root = np.arange(n)
    while True:
        # Hook both ends of every edge to the smaller root, then jump pointers to the top.
        low = np.minimum(root[left], root[right])
        new = root.copy()
        np.minimum.at(new, root[left], low)
        np.minimum.at(new, root[right], low)
        while not np.array_equal(new, jumped := new[new]):
            new = jumped
        if np.array_equal(new, root):
            return root
        root = new
