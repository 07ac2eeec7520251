"""Dedup indexes over a version's records (exact keys, MinHash signatures, embeddings): computed,
reused row by row, and the settings that made them (an index made otherwise is rebuilt)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl

from curation.core.text import text_view
from curation.dedup import exact, minhash, semantic
from schemas.config import Dedup, ExactDedup, MinHashDedup, SemanticDedup
from schemas.record import RECORD_SCHEMA

KINDS = ("exact", "minhash", "semantic")

DedupCfg = ExactDedup | MinHashDedup | SemanticDedup


@dataclass
class Index:
    """One kind of dedup index over a version's records, in the version's record order."""

    kind: str
    settings: dict
    ids: list[str]
    data: np.ndarray  # exact: u64 [n]; minhash: u32 [num_perm, n]; semantic: f32 [n, dim]
    rebuilt: bool = False  # computed from the records because none was stored for these settings

    def __len__(self) -> int:
        return len(self.ids)


def enabled_indexes(dedup: Dedup | None) -> list[tuple[str, DedupCfg]]:
    """The index kinds a config's dedup section asks for, cheapest first."""
    if dedup is None:
        return []
    return [(kind, cfg) for kind in KINDS if (cfg := getattr(dedup, kind)) is not None]


def index_settings(kind: str, cfg: DedupCfg) -> dict:
    module = {"exact": exact, "minhash": minhash, "semantic": semantic}[kind]
    return json.loads(json.dumps(module.index_settings(cfg)))  # as read back from index.json


def index_axis(kind: str) -> int:
    return 1 if kind == "minhash" else 0


def compute_index(kind: str, records: pl.DataFrame, cfg: DedupCfg, progress: bool = False) -> Index:
    """Hash / sign / embed records (those with a non-blank view text) for an index."""
    ids = records["id"]
    if kind == "exact":
        rows, data = exact.index_keys(records, cfg)  # type: ignore[arg-type]
    elif kind == "minhash":
        texts = records.select(text_view(cfg.view)).to_series()
        rows, data = minhash.index_signatures(texts, cfg, progress)  # type: ignore[arg-type]
    else:
        texts = records.select(text_view(cfg.view)).to_series()
        rows = np.flatnonzero((texts.str.strip_chars() != "").to_numpy())
        data = semantic.embed(texts.gather(rows).to_list(), cfg, progress) if len(rows) else None  # type: ignore[arg-type]
        data = np.asarray(data, np.float32) if data is not None else np.zeros((0, 0), np.float32)
    return Index(kind, index_settings(kind, cfg), ids.gather(rows).to_list(), data)


def take_rows(index: Index, positions: np.ndarray) -> Index:
    data = index.data[:, positions] if index.kind == "minhash" else index.data[positions]
    return Index(index.kind, index.settings, [index.ids[p] for p in positions], data)


def concat(parts: list[Index]) -> Index:
    nonempty = [p for p in parts if len(p)] or parts[:1]
    data = np.concatenate([p.data for p in nonempty], axis=index_axis(parts[0].kind))
    return Index(parts[0].kind, parts[0].settings, [i for p in nonempty for i in p.ids], data)


def index_for(kind: str, records: pl.DataFrame, cfg: DedupCfg, fresh: Index | None, progress: bool = False) -> Index:
    """The index rows of `records`, in their order: rows already in `fresh` (same settings) are
    taken from it, only the others are computed."""
    settings = index_settings(kind, cfg)
    position = {rid: i for i, rid in enumerate(fresh.ids)} if fresh is not None and fresh.settings == settings else {}
    ids = records["id"].to_list()
    have = np.array([rid in position for rid in ids], bool)
    computed = compute_index(kind, records.filter(pl.Series(~have)), cfg, progress)
    if not have.any():
        return computed
    reused = take_rows(fresh, np.array([position[rid] for rid in np.array(ids, object)[have]], np.int64))  # type: ignore[arg-type]
    merged = concat([reused, computed]) if len(computed) else reused
    row = {rid: i for i, rid in enumerate(ids)}
    return take_rows(merged, np.argsort([row[rid] for rid in merged.ids], kind="stable"))


def empty_index(kind: str, cfg: DedupCfg) -> Index:
    return compute_index(kind, pl.DataFrame(schema=RECORD_SCHEMA), cfg)
