"""What the dedup stages share: turning "row i is a duplicate of row root[i]" into a StageResult."""

from __future__ import annotations

import numpy as np
import polars as pl

from curation.corpus import Source, column
from curation.stage import StageResult, split_rejects


def split_duplicates(records: Source, stage: str, reason: str, root: np.ndarray, detail: pl.Series | str) -> StageResult:
    """Keep rows with root[i] == i; reject the others as duplicates of row root[i].

    `detail`: one string for every rejected row, or one entry per rejected row in row order.
    Only the ids are read besides what split_rejects reads shard by shard.
    """
    dup = root != np.arange(records.height)
    at = np.flatnonzero(dup)
    reasons = pl.Series("reason", [None] * records.height, pl.String).scatter(at, reason)
    details = pl.Series("detail", [None] * records.height, pl.String).scatter(at, detail)
    ids = column(records, "id")
    duplicate_of = pl.Series("dup", [None] * records.height, pl.String).scatter(at, ids.gather(root[at]))
    return split_rejects(records, stage, reasons, details, duplicate_of)


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
