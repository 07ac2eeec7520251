"""What the dedup stages share: turning "row i is a duplicate of row root[i]" into a StageResult."""

from __future__ import annotations

import numpy as np
import polars as pl

from curation.core.corpus import Source, take
from curation.core.stage import Decision, StageResult, split_each


def split_duplicates(records: Source, stage: str, reason: str, root: np.ndarray, detail: pl.Series | str) -> StageResult:
    """Keep rows with root[i] == i; reject the others as duplicates of row root[i].

    `detail`: one string for every rejected row, or one entry per rejected row in row order.
    Per-row columns are made shard by shard; only the ids of the kept originals are read first.
    """
    at = np.flatnonzero(root != np.arange(records.height))  # the duplicates, in row order
    originals = np.unique(root[at])
    original_ids = take(records, originals, "id")

    def decide(shard: pl.DataFrame, lo: int) -> Decision:
        # Per-row strings are made for one shard at a time: a corpus of one text repeated
        # would otherwise hold a detail and a duplicate_of id for every row.
        a, b = np.searchsorted(at, [lo, lo + shard.height])
        rows = at[a:b] - lo
        def column(values: pl.Series | str) -> pl.Series:
            return pl.repeat(None, shard.height, dtype=pl.String, eager=True).scatter(rows, values)

        details = detail if isinstance(detail, str) else detail.slice(a, b - a)
        duplicate_of = original_ids.gather(np.searchsorted(originals, root[at[a:b]]))
        return shard, column(reason), column(details), column(duplicate_of)

    return split_each(records, stage, decide)


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
