"""The data of a run's ablation variants (train.ablation): each variant's sft rows in export's
TRL shape, written as a small run directory of its own (`<variant>/data/export/hf/sft`) that
training reads like any run's exported set.

Every variant's test split is the run's held-out split (export/hf/sft's test), and a
row whose conversation is a held-out one is removed from every variant's train rows (a raw
duplicate of a held-out row included), so the variants differ in their training data only.
Rows export would reject as they are (broken turns) are left out of every variant: no trainer
takes them. The preference set, for methods with a DPO / ORPO stage, is the run's own.

A variant whose train rows are the exported set's (`selected`; `curated` without a select step)
takes them in the exported order, so that its digest is the exported set's (`exported_digest`):
the training of the run's candidate on those rows is then the variant's (training/ablation.py).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from datasets import Dataset, DatasetDict, load_from_disk

from curation.export.checks import record_problem
from curation.export.formats import HF_ROWS
from schemas.export import NOT_EXPORTED
from schemas.train import Ablation, TrainingInputError
from schemas.train_result import VariantData

COLUMNS = ["id", "source", "kind", "messages", "chosen", "rejected"]
NOT_RAW = ("ingest", "export")  # rejects that are no trainable record: unread input, unrenderable records
SELECT = "select"  # its rejects are the records not selected: curated has them, selected not
MANIFEST = "variant.json"


def variant_dir(run_dir: Path, name: str) -> Path:
    """Where a variant trains (its result.json, adapters); its data is in `data/` below."""
    return run_dir / "train" / "ablation" / name


def write_variants(run_dir: Path, ablation: Ablation) -> dict[str, VariantData]:
    """Each variant's data written under train/ablation/<variant>/data (rewritten only when it
    changed, so a resumed variant keeps its fingerprint), with its manifest."""
    exported, held_out = _exported(run_dir)
    rows = _variant_rows(run_dir, ablation, {_key(row) for row in held_out.to_list()})
    written = {}
    for name, (train, removed) in rows.items():
        train = _in_exported_order(train, exported)
        digest = _digest(train, held_out)
        data = VariantData(
            name=name, train_rows=len(train), held_out_removed=removed, held_out_rows=len(held_out), digest=digest
        )
        folder = variant_dir(run_dir, name) / "data"
        manifest = folder / MANIFEST
        if not manifest.is_file() or VariantData.read(manifest) != data:
            rows_train = Dataset.from_list(train) if train else held_out.select([])
            DatasetDict(train=rows_train, test=held_out).save_to_disk(str(folder / "export" / "hf" / "sft"))
            _link_preference(run_dir, folder)
            data.write(manifest)
        written[name] = data
    return written


def held_out_ids(run_dir: Path) -> list[str]:
    """The ids of the curated set's held-out rows: every variant's evaluation rows."""
    return list(_exported(run_dir)[1]["id"])


def exported_digest(run_dir: Path) -> str:
    """The digest a variant training on the exported set's own train rows has: the data of the
    run's candidates."""
    exported, held_out = _exported(run_dir)
    return _digest(exported, held_out)


def _exported(run_dir: Path) -> tuple[list[dict[str, Any]], Dataset]:
    """The exported sft set's train rows (in the shape variants are written in) and held-out rows."""
    path = run_dir / "export" / "hf" / "sft"
    if not path.is_dir():
        raise TrainingInputError(f"train.ablation: {path} not found: {NOT_EXPORTED}")
    data = load_from_disk(str(path))
    if not isinstance(data, DatasetDict) or "test" not in data:
        raise TrainingInputError(f"train.ablation: {path} has no test split: the variants need held-out rows (export.test_size)")
    return data["train"].select_columns(["id", "messages"]).to_list(), data["test"].select_columns(["id", "messages"])


def _digest(train: list[dict[str, Any]], held_out: Dataset) -> str:
    return hashlib.sha256(orjson.dumps([train, held_out.to_list()])).hexdigest()[:16]


def _in_exported_order(train: list[dict[str, Any]], exported: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exported rows themselves when `train` holds the same rows (the export shuffled them
    into its split), else `train` as it is: the same rows train the same only in the same order."""
    same = Counter((r["id"], _key(r)) for r in train) == Counter((r["id"], _key(r)) for r in exported)
    return exported if same else train


def _variant_rows(run_dir: Path, ablation: Ablation, held: set[bytes]) -> dict[str, tuple[list[dict], int]]:
    """Each variant's train rows in export's TRL shape, in the run's order, and how many of its
    records were held-out conversations (removed)."""

    def trainable(records: list[dict[str, Any]]) -> tuple[list[dict], int]:
        rows = [out for r in records if record_problem(r) is None and (out := HF_ROWS["sft"](r)) is not None]
        train = [r for r in rows if _key(r) not in held]
        return train, len(rows) - len(train)

    for name in ("kept.parquet", "rejected.parquet"):
        if not (run_dir / name).is_file():
            raise TrainingInputError(f"train.ablation: {run_dir / name} not found: variants are built from a run's records")
    kept = _sft(pl.read_parquet(run_dir / "kept.parquet"))
    rejected = pl.read_parquet(run_dir / "rejected.parquet").filter(pl.col("kind") == "sft")
    curated = kept + _sft(rejected.filter(pl.col("stage") == SELECT))  # the curation before any selection
    output, raw = trainable(kept), trainable(kept + _sft(rejected.filter(~pl.col("stage").is_in(NOT_RAW))))
    rows: dict[str, tuple[list[dict], int]] = {}
    for name in ablation.variants:
        if name == "curated":
            rows[name] = trainable(curated)
        elif name == "raw":
            rows[name] = raw
        elif name == "random":  # raw less the held-out rows, as many as the run's output trains on
            rows[name] = (random.Random(ablation.seed).sample(raw[0], min(len(output[0]), len(raw[0]))), 0)
        elif name == f"minus-{SELECT}":
            raise TrainingInputError(f"train.ablation.variants: {name} is `curated` (the curation before selection)")
        else:
            stage = SELECT if name == "selected" else name.removeprefix("minus-")
            back = rejected.filter(pl.col("stage") == stage)
            if back.is_empty():
                stages = ", ".join(sorted(set(rejected["stage"]) - set(NOT_RAW))) or "none"
                raise TrainingInputError(
                    f"train.ablation.variants: {name}: no sft record of this run was rejected by a stage"
                    f" '{stage}' (stages with sft rejects: {stages})"
                )
            rows[name] = output if name == "selected" else trainable(curated + _sft(back))
    return rows


def _sft(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.filter(pl.col("kind") == "sft").select(COLUMNS).to_dicts()


def _key(row: dict[str, Any]) -> bytes:
    """A conversation's identity, whatever record carries it."""
    return orjson.dumps([(t["role"], t["content"]) for t in row["messages"]])


def _link_preference(run_dir: Path, folder: Path) -> None:
    preference = run_dir / "export" / "hf" / "preference"
    link = folder / "export" / "hf" / "preference"
    if preference.is_dir() and not link.exists():
        link.symlink_to(preference.resolve())
