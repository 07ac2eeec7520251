"""Ingest on Ray: one task per input file reads it where it lies (S3 or a shared path), so the
driver plans and gathers, and reads no input bytes.

The driver lists the files (metadata only: curation/ingest/collect.py `_plan`). Each task reads
one file with the local ingest's reader and collector and writes that file's record and reject
shards under the run's scratch folder; it returns the file's report and its records' input ids,
in order (ids, never texts). Ids are unique run-wide: the driver replays every file's input ids in
input order through one `RunIds`, exactly as the local ingest gives them out, and only the records
whose id that changes (an input id another file already used) are renamed, by a second task per
such file. The shards are then one corpus in input order: the same records, ids and rejects as
`engine: local`.

Workers write to the run's scratch folder, so on a cluster of several machines the run directory
must be on storage every node mounts (the tests' two nodes share one machine).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import orjson
import polars as pl

from curation.core.corpus import Corpus, CorpusWriter
from curation.core.engine import Engine
from curation.ingest.collect import STAGE, FileReport, IngestResult, RunIds, _Collector, _plan, skipped_files
from schemas.config import InputFormat, InputSpec
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA, meta_json

log = logging.getLogger(__name__)

_Item = tuple[int, InputSpec, Path, InputFormat]  # a Path or a RemotePath, as `_plan` gives it


@dataclass
class _FileResult:
    """What one task sends back: the file's report, its shards, its records' input ids."""

    report: FileReport
    records: Corpus
    rejected: Corpus
    input_ids: list[str]
    control_chars_removed: int


class _FileCollector(_Collector):
    """The local collector, noting each record's input id (ids are unique within the file here;
    the driver makes them unique run-wide)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.input_ids: list[str] = []

    def unique(self, rid: str) -> str:
        self.input_ids.append(rid)
        return super().unique(rid)


def ingest_on_ray(
    inputs: list[InputSpec], engine: Engine, out: Path, batch_size: int, base: Path | None
) -> IngestResult:
    """`collect.ingest(inputs, out=out)` with every file read by a Ray task."""
    start = time.perf_counter()
    plan = _plan(inputs)
    skipped = skipped_files(inputs, base)
    if skipped:
        log.info("ingest: skipped %d files of directory inputs that are not data: %s", len(skipped), ", ".join(skipped))
    items: list[_Item] = [(i, spec, path, fmt) for i, (spec, path, fmt) in enumerate(plan)]
    read = partial(_read_file, out=out / "files", batch_size=batch_size, base=base)
    ids, renames, results = RunIds(), [], []
    for result in engine.imap(read, items, len(items), STAGE):
        log.info("ingest: %s", result.report.line())
        in_file = RunIds()  # the ids the task gave out, replayed
        changed = {}
        for row, rid in enumerate(result.input_ids):
            given, final = in_file.unique(rid), ids.unique(rid)
            if given != final:
                changed[row] = (final, rid)
        if changed:
            renames.append((result.records, changed))
        result.input_ids = []  # the driver keeps the run-wide ids only
        results.append(result)
    for _ in engine.imap(_rename, renames, len(renames), f"{STAGE} ids"):
        pass
    scratch = out / "scratch"
    records = _joined([r.records for r in results], out / "records", batch_size, scratch, RECORD_SCHEMA)
    rejected = _joined([r.rejected for r in results], out / "rejected", batch_size, scratch, REJECT_SCHEMA)
    shutil.rmtree(out / "files", ignore_errors=True)
    reports = [r.report for r in results]
    return IngestResult(
        records, rejected, sum(f.rows_read for f in reports), time.perf_counter() - start,
        sum(r.control_chars_removed for r in results), reports, skipped,
    )


def _read_file(item: _Item, out: Path, batch_size: int, base: Path | None) -> _FileResult:
    """In a Ray worker: one input file into its own record and reject shards."""
    index, spec, path, fmt = item
    here = out / f"{index:06d}"
    scratch = here / "scratch"
    sinks = (
        CorpusWriter(here / "records", batch_size, scratch, RECORD_SCHEMA),
        CorpusWriter(here / "rejected", batch_size, scratch, REJECT_SCHEMA),
    )
    collector = _FileCollector(sinks, batch_size, None, base)
    collector.read_file(spec, fmt, path)
    records, rejected = collector.close()
    assert isinstance(records, Corpus) and isinstance(rejected, Corpus)
    return _FileResult(collector.files[0], records, rejected, collector.input_ids, collector.control_chars_removed)


def _rename(job: tuple[Corpus, dict[int, tuple[str, str]]]) -> None:
    """In a Ray worker: give the records at these rows of a file their run-wide ids, and their
    input id in meta, as the local ingest writes them; shards are rewritten in place."""
    records, changed = job
    for path, lo, height in zip(records.paths, records.starts, records.heights, strict=True):
        rows = {row - lo: change for row, change in changed.items() if lo <= row < lo + height}
        if not rows:
            continue
        shard = pl.read_parquet(path)
        ids, metas = shard["id"].to_list(), shard["meta"].to_list()
        for row, (final, rid) in rows.items():
            ids[row] = final
            metas[row] = meta_json({**orjson.loads(metas[row]), "input_id": rid})
        shard = shard.with_columns(pl.Series("id", ids, pl.String), pl.Series("meta", metas, pl.String))
        shard.write_parquet(path, compression="lz4")


def _joined(parts: list[Corpus], dest: Path, batch_size: int, scratch: Path, schema: pl.Schema | dict) -> Corpus:
    """The files' corpora as one, in input order: their shards moved into `dest` (no rows
    copied); empty shards left out, one kept when every file is empty (a corpus has a shard)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    files, heights = [], []
    for i, part in enumerate(parts):
        for path, height in zip(part.paths, part.heights, strict=True):
            if height == 0:
                continue
            name = f"{i:06d}-{path.name}"
            shutil.move(path, dest / name)
            files.append(name)
            heights.append(height)
    if not files:
        return CorpusWriter(dest, batch_size, scratch, schema).close()
    return Corpus(dest, tuple(files), tuple(heights), batch_size, scratch)
