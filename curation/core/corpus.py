"""A corpus on disk: parquet shards of at most `batch_size` rows, read one shard at a time.

This is how a run stays within a fixed amount of memory however large its input: ingest writes
shards as it reads, and a stage reads one shard, writes what it keeps and rejects to new shards,
and drops it. Only the corpus-wide dedup steps hold state for every row, and that state is compact
(hashes, band keys, ids). `Source` is what a stage accepts: a DataFrame (small runs, tests) or a
Corpus; the helpers here let stage code treat both alike.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

MAX_PIECES = 4  # frames a CorpusWriter buffers before it writes a shard


@dataclass(frozen=True)
class Corpus:
    """Shard files in `dir`, in row order. Small and picklable: it names files, holds no rows."""

    dir: Path
    files: tuple[str, ...]  # names inside dir, in order
    heights: tuple[int, ...]  # rows per file
    batch_size: int  # rows per shard of the corpora derived from this one
    scratch: Path  # where derived corpora are written

    @classmethod
    def open(cls, dir: Path, batch_size: int, scratch: Path) -> Corpus:
        """The corpus a CorpusWriter wrote into `dir` (shard names sort in row order)."""
        files = sorted(f.name for f in dir.glob("*.parquet"))
        heights = tuple(pl.scan_parquet(dir / f).select(pl.len()).collect().item() for f in files)
        return cls(dir, tuple(files), heights, batch_size, scratch)

    @property
    def height(self) -> int:
        return sum(self.heights)

    @property
    def starts(self) -> list[int]:
        """The first row of each shard."""
        return np.r_[0, np.cumsum(self.heights)[:-1]].astype(int).tolist()

    @property
    def schema(self) -> pl.Schema:
        return pl.read_parquet_schema(self.dir / self.files[0])

    @property
    def columns(self) -> list[str]:
        return list(self.schema)

    @property
    def paths(self) -> list[Path]:
        return [self.dir / f for f in self.files]

    def frames(self) -> Iterator[pl.DataFrame]:
        for path in self.paths:
            yield pl.read_parquet(path)

    def column(self, expr: pl.Expr | str) -> pl.Series:
        """One expression over every row, reading only the columns it needs."""
        return pl.scan_parquet(self.paths).select(expr).collect().to_series()

    def collect(self) -> pl.DataFrame:
        """All rows in memory: for the stages that need the whole frame (export, refresh)."""
        return pl.read_parquet(self.paths)

    def derive(self, schema: pl.Schema | dict | None = None) -> CorpusWriter:
        """A writer for a new corpus next to this one (what a stage keeps or rejects), with this
        corpus's schema unless told otherwise."""
        where = self.scratch / uuid.uuid4().hex[:12]
        return CorpusWriter(where, self.batch_size, self.scratch, schema if schema is not None else self.schema)

    def move(self, dest: Path) -> Corpus:
        """The same corpus under `dest` (renamed on the same filesystem)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(self.dir, dest)
        return Corpus(dest, self.files, self.heights, self.batch_size, self.scratch)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class CorpusWriter:
    """Appends frames; writes a shard (at most `batch_size` rows) before the buffer would
    overflow, or once it holds MAX_PIECES frames.

    Frames here are often small selections (a stage's rejects) of large frames, and a selection
    of strings keeps its parent's whole string buffers alive: buffering rejects until a shard is
    full would hold dozens of input shards in memory. So a shard may be smaller than batch_size."""

    def __init__(self, dir: Path, batch_size: int, scratch: Path, schema: pl.Schema | dict | None = None) -> None:
        shutil.rmtree(dir, ignore_errors=True)
        dir.mkdir(parents=True)
        self.dir, self.batch_size, self.scratch, self.schema = dir, batch_size, scratch, schema
        self.buffer: list[pl.DataFrame] = []
        self.buffered = 0
        self.files: list[str] = []
        self.heights: list[int] = []

    def write(self, frame: pl.DataFrame) -> None:
        # Never carry a slice of a written shard over to the next one: a slice keeps its whole
        # parent's string buffers alive, and carried slices would chain every shard in memory.
        for lo in range(0, frame.height, self.batch_size):
            piece = frame.slice(lo, self.batch_size)
            if self.buffered + piece.height > self.batch_size:
                self._flush()
            self.buffer.append(piece)
            self.buffered += piece.height
        if self.buffered >= self.batch_size or len(self.buffer) >= MAX_PIECES:
            self._flush()

    def close(self) -> Corpus:
        """The corpus written; one empty shard when no row was written (a corpus has a shard)."""
        if self.buffered or not self.files:
            self._flush()
        return Corpus(self.dir, tuple(self.files), tuple(self.heights), self.batch_size, self.scratch)

    def _flush(self) -> None:
        shard = pl.concat(self.buffer, how="vertical_relaxed") if self.buffer else pl.DataFrame(schema=self.schema)
        if self.schema is not None:
            shard = shard.cast(self.schema)  # type: ignore[arg-type]
        name = f"part-{len(self.files):06d}.parquet"
        shard.write_parquet(self.dir / name, compression="lz4")  # 2.5x faster to write than zstd
        self.files.append(name)
        self.heights.append(shard.height)
        self.buffer, self.buffered = [], 0


Source = pl.DataFrame | Corpus


def shards(source: Source) -> Iterator[tuple[pl.DataFrame, int]]:
    """(shard, its first row) in order; a frame is one shard."""
    if isinstance(source, Corpus):
        yield from zip(source.frames(), source.starts, strict=True)
    else:
        yield source, 0


def column(source: Source, expr: pl.Expr | str) -> pl.Series:
    """An expression over every row of a frame or a corpus."""
    if isinstance(source, Corpus):
        return source.column(expr)
    return source.select(expr).to_series()


def take(source: Source, rows: np.ndarray, expr: pl.Expr | str) -> pl.Series:
    """An expression at the given (sorted) rows only: a corpus reads just the shards holding them."""
    parts = list(take_parts(source, rows, expr))
    return pl.concat(parts) if len(parts) > 1 else parts[0]


def take_parts(source: Source, rows: np.ndarray, expr: pl.Expr | str) -> Iterator[pl.Series]:
    """`take`, one series per shard holding some of the rows (or one empty series): a caller
    that reduces each part never holds the values of every row."""
    if isinstance(source, pl.DataFrame):
        yield source.select(expr).to_series().gather(rows)
        return
    found = False
    for path, lo, n in zip(source.paths, source.starts, source.heights, strict=True):
        inside = rows[(rows >= lo) & (rows < lo + n)] - lo
        if len(inside):
            found = True
            yield pl.scan_parquet(path).select(expr).collect().to_series().gather(inside)
    if not found:
        yield pl.scan_parquet(source.paths[0]).select(expr).head(0).collect().to_series()


def lazy(source: Source) -> pl.LazyFrame:
    return pl.scan_parquet(source.paths) if isinstance(source, Corpus) else source.lazy()


def collect(source: Source) -> pl.DataFrame:
    """The whole source as one frame."""
    return source.collect() if isinstance(source, Corpus) else source


def append(source: Source, added: pl.DataFrame) -> Source:
    """Rows added after the last row (a corpus is copied shard by shard into a new one)."""
    added = added.select(source.columns)
    if isinstance(source, pl.DataFrame):
        return pl.concat([source, added])
    writer = source.derive()
    for frame in source.frames():
        writer.write(frame)
    writer.write(added)
    return writer.close()


def write_parquet(sources: list[Source], path: Path, schema: pl.Schema | dict) -> int:
    """The rows of all sources, in order, as one parquet file (streamed: a corpus is never
    collected). Written under a temporary name and renamed: a reader never sees half a file.
    Returns the row count."""
    frames = [lazy(s).select(list(schema)).cast(schema) for s in sources]  # type: ignore[arg-type]
    whole = pl.concat(frames) if frames else pl.LazyFrame(schema=schema)
    with atomic_path(path) as tmp:
        whole.sink_parquet(tmp)
    return sum(s.height for s in sources)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write; renamed to `path` when the block succeeds,
    removed when it fails."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
