"""The Hugging Face DatasetDicts (hf/sft, hf/preference): TRL's columns, a seeded train/test split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from curation.export.checks import Row
from curation.export.formats import HF_ROWS
from schemas.export import ExportConfig


def split(dataset: Dataset, test_size: float, seed: int) -> DatasetDict:
    """A seeded train/test split; below 2 rows everything is train (nothing can be held out)."""
    if dataset.num_rows < 2:
        return DatasetDict(train=dataset)
    # datasets' own rounding (test rounds up), keeping at least one train row.
    n_test = min(math.ceil(test_size * dataset.num_rows), dataset.num_rows - 1)
    return dataset.train_test_split(test_size=n_test, seed=seed)


def write_hf(path: Path, kind: str, rows: list[Row], cfg: ExportConfig) -> dict[str, Any]:
    if not rows:
        return {"note": "no rows: not written"}
    splits = split(Dataset.from_list([HF_ROWS[kind](r) for r in rows]), cfg.test_size, cfg.seed)
    splits.save_to_disk(str(path))
    counts: dict[str, Any] = {name: part.num_rows for name, part in splits.items()}
    if "test" not in splits:
        counts["note"] = "fewer than 2 rows: no test split, all train"
    return counts
