"""Ingest on Ray: one task per input file reads it where it lies (S3 or a shared path), so the
driver plans and gathers, and reads no input bytes.

The driver lists the files (metadata only: curation/ingest/collect.py `planned`). Each task reads
one file with the local ingest's reader and collector and writes that file's record and reject
shards under the run's scratch folder; it returns the file's report and its records' input ids,
in order (ids, never texts). Ids are unique run-wide: the driver replays every file's input ids in
input order through one `RunIds`, exactly as the local ingest gives them out, and only the records
whose id that changes (an input id another file already used) are renamed, by a second task per
such file. The shards are then one corpus in input order: the same records, ids and rejects as
`engine: local`.

A task writes its shards straight into the run's scratch folder when it sees it (one machine, or
a run directory on storage every node mounts: the driver leaves a mark there for tasks to find);
elsewhere it sends the shards back as bytes and the driver writes them, so a cluster still needs
no shared filesystem, but then the records pass through the driver (the inputs still do not).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import orjson
import polars as pl

from curation.core.corpus import Corpus, CorpusWriter
from curation.core.engine import Engine, LocalEngine
from curation.ingest.collect import STAGE, Collector, FileReport, IngestResult, RunIds, planned
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
    shipped: dict[str, list[tuple[str, bytes]]] | None = None  # corpus -> its shards' (name, bytes)


class _FileCollector(Collector):
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
    plan, skipped = planned(inputs, base)
    items: list[_Item] = [(i, spec, path, fmt) for i, (spec, path, fmt) in enumerate(plan)]
    (out / "files").mkdir(parents=True, exist_ok=True)
    mark = out / "files" / f".driver-{uuid.uuid4().hex}"  # a task that sees it writes its shards here
    mark.touch()
    read = partial(_read_file, out=out / "files", mark=mark.name, batch_size=batch_size, base=base)
    ids, renames, results = RunIds(), [], []
    for index, result in enumerate(engine.imap(read, items, len(items), STAGE)):
        if result.shipped is not None:
            _land(result, out / "files" / f"{index:06d}")
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
    # Renamed where the shards are: by tasks when every task wrote them here, else in the driver.
    renamer = engine if all(r.shipped is None for r in results) else LocalEngine()
    for _ in renamer.imap(_rename, renames, len(renames), f"{STAGE} ids"):
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


def _read_file(item: _Item, out: Path, mark: str, batch_size: int, base: Path | None) -> _FileResult:
    """In a Ray worker: one input file into its own record and reject shards, in `out` when
    the driver's mark is there, else in a folder of this machine, sent back as bytes."""
    index, spec, path, fmt = item
    shared = _sees(out / mark)
    own = None if shared else Path(tempfile.mkdtemp(prefix="curate-ingest-"))
    here = (out if own is None else own) / f"{index:06d}"
    scratch = here / "scratch"
    sinks = (
        CorpusWriter(here / "records", batch_size, scratch, RECORD_SCHEMA),
        CorpusWriter(here / "rejected", batch_size, scratch, REJECT_SCHEMA),
    )
    collector = _FileCollector(sinks, batch_size, None, base)
    collector.read_file(spec, fmt, path)
    records, rejected = collector.close()
    assert isinstance(records, Corpus) and isinstance(rejected, Corpus)
    result = _FileResult(collector.files[0], records, rejected, collector.input_ids, collector.control_chars_removed)
    if own is not None:
        result.shipped = {name: [(p.name, p.read_bytes()) for p in corpus.paths]
                          for name, corpus in (("records", records), ("rejected", rejected))}
        shutil.rmtree(own, ignore_errors=True)
    return result


def _sees(mark: Path) -> bool:
    return mark.exists()


def _land(result: _FileResult, here: Path) -> None:
    """Write a task's shipped shards under `here`; its corpora now name them."""
    assert result.shipped is not None
    landed = []
    for name, corpus in (("records", result.records), ("rejected", result.rejected)):
        (here / name).mkdir(parents=True, exist_ok=True)
        for file, data in result.shipped[name]:
            (here / name / file).write_bytes(data)
        landed.append(Corpus(here / name, corpus.files, corpus.heights, corpus.batch_size, here / "scratch"))
    result.records, result.rejected = landed
    result.shipped = {}  # written: the bytes are not held to the end (and the shards are the driver's)


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
