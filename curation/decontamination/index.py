"""The benchmark index: every checked benchmark text with its word n-gram hashes.

A benchmark file is read with the project's own ingest (any format and shape it reads, with the
same `columns:` mapping and the same refusal of what may not be opened as inputs), and each
item splits into the texts that are checked one by one: every turn of a conversation (of the
benchmark's `view`), `chosen` / `rejected` answers, and each blank-line paragraph of a raw item
(MT-Bench's questions: one per turn). A text with at least `ngram` words is indexed by all its
n-grams; a shorter one by its leading `min_words`-gram (it must then appear whole). A text with
fewer than `min_words` distinct words is not checked (counted as too short).

Each benchmark's part is built once and cached by the file's sha256 (with its path, the settings
and the polars version, whose string hash the n-grams use) under `<cache>/decontamination/`, and once
per process in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from curation.core.inputs import expand_input
from curation.core.storage import as_path, files_under
from curation.decontamination.ngrams import gram_hashes, normalised_words, word_hashes
from curation.ingest import ingest
from schemas.bundled import cache_dir
from schemas.config import Benchmark, ConfigError, Decontamination, InputSpec

INDEX_FORMAT = "decontamination-index-3"  # bump when what is cached changes
PARAGRAPH = re.compile(r"\n\s*\n")
TEXTS_SCHEMA = {"benchmark": pl.String, "item": pl.String, "source": pl.String, "part": pl.String, "text": pl.String}


@dataclass(frozen=True)
class BenchmarkIndex:
    """Checked benchmark texts (TEXTS_SCHEMA + `words`) and, sorted by hash, the n-grams of the
    long ones and the leading `min_words`-grams of the short ones, each with its text's row."""

    texts: pl.DataFrame
    ngram: int
    min_words: int
    long_hash: np.ndarray
    long_text: np.ndarray
    short_hash: np.ndarray
    short_text: np.ndarray
    figures: dict  # per benchmark: items, texts checked, texts too short to check

    def words(self, text: int) -> list[str]:
        return self._words[text]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_words", self.texts["words"].to_list())


def build_index(cfg: Decontamination) -> BenchmarkIndex:
    """The index over every configured benchmark (each part from the cache when it is there)."""
    parts = [_benchmark_part(b.model_copy(), cfg.ngram, cfg.min_words, i) for i, b in enumerate(cfg.benchmarks)]
    texts = pl.concat([p[0] for p in parts]) if parts else pl.DataFrame(schema={**TEXTS_SCHEMA, "words": pl.List(pl.String)})
    offsets = np.cumsum([0] + [p[0].height for p in parts])
    grams = {}
    for kind in ("long", "short"):
        hashes = np.concatenate([p[1][f"{kind}_hash"] for p in parts])
        rows = np.concatenate([p[1][f"{kind}_text"] + offsets[k] for k, p in enumerate(parts)])
        order = np.argsort(hashes, kind="stable")
        grams[kind] = (hashes[order], rows[order])
    figures = {b.name: p[2] for b, p in zip(cfg.benchmarks, parts, strict=True)}
    return BenchmarkIndex(texts, cfg.ngram, cfg.min_words, *grams["long"], *grams["short"], figures)


def _benchmark_part(bench: Benchmark, ngram: int, min_words: int, at: int) -> tuple[pl.DataFrame, dict, dict]:
    key = _cache_key(bench, ngram, min_words)
    return _cached_part(key, bench.model_dump_json(), ngram, min_words, at)


@lru_cache(maxsize=32)
def _cached_part(key: str, bench_json: str, ngram: int, min_words: int, at: int) -> tuple[pl.DataFrame, dict, dict]:
    folder = cache_dir() / "decontamination" / key
    try:
        texts = pl.read_parquet(folder / "texts.parquet")
        with np.load(folder / "grams.npz") as grams:
            arrays = {k: grams[k] for k in grams.files}
        figures = json.loads((folder / "figures.json").read_text(encoding="utf-8"))
        return texts, arrays, figures
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError):
        pass  # not cached yet (or damaged): build it
    bench = Benchmark.model_validate_json(bench_json)
    texts, arrays, figures = _build_part(bench, ngram, min_words, at)
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    texts.write_parquet(partial / "texts.parquet")
    np.savez(partial / "grams.npz", **arrays)
    (partial / "figures.json").write_text(json.dumps(figures), encoding="utf-8")
    if folder.exists():  # another process cached it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.rename(folder)
    return texts, arrays, figures


def _cache_key(bench: Benchmark, ngram: int, min_words: int) -> str:
    h = hashlib.sha256()
    for f in _files(bench.path):
        with f.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
    # The path too: the cached texts name their source locations.
    settings = [INDEX_FORMAT, pl.__version__, str(as_path(bench.path).resolve()), bench.model_dump(mode="json"), ngram, min_words]
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:32]


def _files(path: str) -> list[Path]:
    """The files read for a benchmark (as ingest expands it, local or remote); a save_to_disk folder's files."""
    return sorted(f for p in expand_input(path) for f in (files_under(p) if p.is_dir() else [p]))


def _build_part(bench: Benchmark, ngram: int, min_words: int, at: int) -> tuple[pl.DataFrame, dict, dict]:
    read = ingest([InputSpec(**bench.model_dump(include=set(InputSpec.model_fields)))], progress=False)
    records = read.records
    assert isinstance(records, pl.DataFrame)
    if records.height == 0:
        reasons = read.rejected["reason"].value_counts().rows() if read.rejected.height else []
        raise ConfigError(
            f"decontamination.benchmarks[{at}].path: no benchmark items read from {bench.path} (rejected: {reasons})"
        )
    rows = [
        (bench.name, rec["id"], rec["source"], part, text)
        for rec in records.iter_rows(named=True)
        for part, text in item_texts(rec, bench.view)
    ]
    texts = pl.DataFrame(rows, schema=TEXTS_SCHEMA, orient="row")
    texts = texts.with_columns(normalised_words(pl.col("text")).alias("words"))
    n_words = texts["words"].list.len()
    # Distinct words: `arr = [0, 0, 0, ...]` or `def add(x, y): return x + y` say too little to
    # tell a copy from a coincidence, however long they are.
    checked = texts["words"].list.n_unique() >= min_words
    too_short = int((~checked).sum())
    texts = texts.filter(checked)
    arrays = {}
    for kind, chosen, length in (("long", n_words >= ngram, ngram), ("short", n_words < ngram, min_words)):
        rows_of_kind = np.flatnonzero(chosen.filter(checked).to_numpy())
        hashes, starts = word_hashes(texts["words"].gather(rows_of_kind))
        grams, position = gram_hashes(hashes, starts, length)
        text_of = np.searchsorted(starts, position, side="right") - 1
        if kind == "short":  # only the leading gram of each short text
            first = np.concatenate([[True], text_of[1:] != text_of[:-1]]) if len(text_of) else np.zeros(0, bool)
            grams, text_of = grams[first], text_of[first]
        arrays[f"{kind}_hash"], arrays[f"{kind}_text"] = grams, rows_of_kind[text_of].astype(np.int64)
    figures = {"items": records.height, "texts": texts.height, "too_short": too_short}
    return texts, arrays, figures


def item_texts(record: dict, view: str) -> list[tuple[str, str]]:
    """(part, text) of a benchmark item: what is checked on its own (the turns of `view`)."""
    if record["kind"] == "raw":
        paragraphs = [p.strip() for p in PARAGRAPH.split(record["text"] or "") if p.strip()]
        return [(f"paragraph {i + 1}" if len(paragraphs) > 1 else "text", p) for i, p in enumerate(paragraphs)]
    sides = {"all": ("messages", "chosen", "rejected"), "no_system": ("messages", "chosen", "rejected"),
             "user": ("messages",), "assistant": ("messages", "chosen")}[view]
    found = []
    for side in sides:
        for i, turn in enumerate(record[side] or []):
            role = turn["role"]
            wanted = role == view if view in ("user", "assistant") else view == "all" or role != "system"
            if side == "messages" and not wanted:
                continue
            label = f"{role} turn {i + 1}" if side == "messages" else f"{side} turn {i + 1}"
            found.append((label, turn["content"]))
    return found
