"""The Hugging Face DatasetDicts (hf/sft, hf/preference): TRL's columns, a seeded train/test split."""

from __future__ import annotations

import math
from pathlib import Path

from datasets import Dataset, DatasetDict

from curation.export.checks import Row
from curation.export.formats import HF_ROWS
from schemas.export import ExportConfig, ExportedSet


def split(dataset: Dataset, test_size: float, seed: int) -> DatasetDict:
    """A seeded train/test split; below 2 rows everything is train (nothing can be held out)."""
    if dataset.num_rows < 2:
        return DatasetDict(train=dataset)
    # datasets' own rounding (test rounds up), keeping at least one train row.
    n_test = min(math.ceil(test_size * dataset.num_rows), dataset.num_rows - 1)
    return dataset.train_test_split(test_size=n_test, seed=seed)


def write_hf(path: Path, kind: str, rows: list[Row], cfg: ExportConfig) -> ExportedSet:
    """hf/<kind> from a set's rows (at least one)."""
    splits = split(Dataset.from_list([HF_ROWS[kind](r) for r in rows]), cfg.test_size, cfg.seed)
    splits.save_to_disk(str(path))
    test = splits["test"].num_rows if "test" in splits else 0
    note = None if "test" in splits else "fewer than 2 rows: no test split, all train"
    return ExportedSet(train=splits["train"].num_rows, test=test, note=note)
