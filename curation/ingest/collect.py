"""The ingest run: every input file through its reader and shape into validated records and
rejects, with run-wide unique ids, in memory or streamed to corpora."""

from __future__ import annotations

import gc
import hashlib
import itertools
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from tqdm import tqdm

from curation.core.corpus import CorpusWriter, Source
from curation.core.inputs import expand_input, output_overlap, skipped_in_dir
from curation.core.stage import StageResult
from curation.core.stats import StageStats
from curation.core.storage import RemotePath
from curation.ingest.compressed import compression
from curation.ingest.readers import READERS, Row, TextDecoding, detect_format
from curation.ingest.shapes import SHAPES, Bad, Draft, detect_shape, input_id, map_columns
from schemas.config import ConfigError, InputFormat, InputSpec
from schemas.figures import IngestFigures, InputFile
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA, Record, meta_json, records_frame, rejects_frame

STAGE = "ingest"
SAMPLE_ROWS = 200  # rows per file `curate validate` reads
# Control characters other than tab, newline and carriage return (NUL included) are removed
# from every text: they corrupt tokenizers and terminals and carry no content.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# An id `unique` may have made: the input id, "~" and a suffix number of 2 or more (at most
# 18 digits: a longer number was never given out, and int() refuses very long ones).
_SUFFIXED = re.compile(r"(.*)~([1-9][0-9]{0,17})", re.DOTALL)
log = logging.getLogger(__name__)


@dataclass
class FileReport:
    """What ingest made of one input file: stats.json's `ingest.files`, the report's Sources."""

    path: str
    format: str
    compression: str | None = None
    encoding: str | None = None  # a text file's, as detected (readers.TextDecoding); None: parquet, save_to_disk
    shapes: Counter = field(default_factory=Counter)  # shape -> rows read as it ("unknown": none fits)
    rows_read: int = 0
    records: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    missing_columns: list[str] = field(default_factory=list)  # `columns:` names no row had

    @property
    def shape(self) -> str:
        """The shape, or `mixed: a 10, b 2` when rows came in several."""
        if len(self.shapes) <= 1:
            return next(iter(self.shapes), "-")
        return "mixed: " + ", ".join(f"{s} {n}" for s, n in self.shapes.most_common())

    def entry(self) -> InputFile:
        return InputFile(path=self.path, format=self.format, compression=self.compression,
                         encoding=self.encoding, shape=self.shape,
                         rows_read=self.rows_read, records=self.records, rejected=self.rejected,
                         removed_by_reason=dict(self.reasons.most_common()), missing_columns=self.missing_columns)

    def line(self) -> str:
        """One log line: `data.jsonl.gz (jsonl, gzip, utf-8): hh_rlhf, 120 rows read, 118 records, 2 rejected (...)`."""
        fmt = ", ".join(x for x in (self.format, self.compression, self.encoding) if x)
        reasons = ", ".join(f"{r} {n}" for r, n in self.reasons.most_common(3))
        text = f"{self.path} ({fmt}): {self.shape}, {self.rows_read} rows read, {self.records} records, {self.rejected} rejected"
        text += f" ({reasons})" if reasons else ""
        if self.rows_read == 0:
            text += " - an empty file"
        if self.missing_columns:
            text += f" - columns not found: {', '.join(self.missing_columns)}"
        return text


@dataclass
class IngestResult:
    """What ingest produced, and the figures stats.json needs."""

    records: Source  # RECORD_SCHEMA, in input order
    rejected: Source  # REJECT_SCHEMA, stage "ingest"
    rows_read: int  # input rows seen; a file that cannot be read at all counts as one
    seconds: float
    control_chars_removed: int = 0  # records whose texts lost control characters
    files: list[FileReport] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files of directory inputs that are not data

    def stats(self) -> StageStats:
        """The "ingest" entry of stats.json."""
        figures = IngestFigures(rows_read=self.rows_read, control_chars_removed=self.control_chars_removed,
                                files=[f.entry() for f in self.files], skipped_files=self.skipped)
        result = StageResult(self.records, self.rejected, self.seconds, figures)
        return result.stats(STAGE, self.records.height + self.rejected.height)


def check_inputs(
    inputs: list[InputSpec], sample: bool = False, base: Path | None = None, outputs: tuple[Path | RemotePath, ...] = ()
) -> list[FileReport]:
    """Expand every input and resolve every file's format; raise ConfigError before any work.

    An input that would read what the run writes (`outputs`: its run and publish directories)
    is one too, and so is a `columns:` mapping that names a column the file's first object
    lacks (those inputs are always sampled). With `sample`, every file's first SAMPLE_ROWS rows
    are read and what each came to is returned (`curate validate`)."""
    _plan(inputs)
    for i, spec in enumerate(inputs):
        if overlap := output_overlap(spec.path, outputs):
            raise ConfigError(f"inputs[{i}].path: {overlap}")
    read = inputs if sample else [spec for spec in inputs if spec.columns]
    files = ingest(read, progress=False, limit=SAMPLE_ROWS, base=base).files if read else []
    for report in files:
        if report.missing_columns:
            missing = ", ".join(report.missing_columns)
            raise ConfigError(f"{report.path}: `columns:` names columns the file does not have: {missing}")
    return files if sample else []


def skipped_files(inputs: list[InputSpec], base: Path | None = None) -> list[str]:
    """The files of directory inputs that ingest leaves out (README, LICENSE, hidden, not data)."""
    return [_shown(f, base) for spec in inputs for f in skipped_in_dir(spec.path)]


def ingest(
    inputs: list[InputSpec],
    progress: bool = True,
    out: Path | None = None,
    batch_size: int = 10_000,
    limit: int | None = None,
    base: Path | None = None,
) -> IngestResult:
    """Read every input into records (in input order) and rejects; bad rows never raise.

    With `out`, records and rejects are written as corpora to out/records and out/rejected
    (shards of `batch_size` rows, derived corpora in out/scratch) as they are read; without it
    they are returned as frames. `limit`: read at most that many rows of each file (a sample).
    Records' `source` names files relative to `base` (the config's folder; default: the working
    directory), so it does not change with the directory a run starts in."""
    start = time.perf_counter()
    plan, skipped = planned(inputs, base)
    # Ingest allocates millions of small objects that all survive: the cyclic GC would rescan
    # them over and over (a fifth of the run time on 100k rows) and can free nothing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        sinks = None
        if out is not None:
            scratch = out / "scratch"
            sinks = (
                CorpusWriter(out / "records", batch_size, scratch, RECORD_SCHEMA),
                CorpusWriter(out / "rejected", batch_size, scratch, REJECT_SCHEMA),
            )
        collector = Collector(sinks, batch_size, limit, base)
        for spec, path, fmt in tqdm(plan, desc=STAGE, unit="file", disable=not progress):
            collector.read_file(spec, fmt, path)
            if limit is None:
                log.info("ingest: %s", collector.files[-1].line())
        records, rejected = collector.close()
    finally:
        if gc_was_enabled:
            gc.enable()
    seconds = time.perf_counter() - start
    return IngestResult(
        records, rejected, collector.rows_read, seconds, collector.control_chars_removed, collector.files, skipped
    )


def planned(inputs: list[InputSpec], base: Path | None) -> tuple[list[tuple[InputSpec, Path, InputFormat]], list[str]]:
    """Every input file with its format (`_plan`), and the files of directory inputs left out (logged)."""
    plan = _plan(inputs)  # first: what may not be read is refused with its input's index
    skipped = skipped_files(inputs, base)
    if skipped:
        log.info("ingest: skipped %d files of directory inputs that are not data: %s", len(skipped), ", ".join(skipped))
    return plan, skipped


def _plan(inputs: list[InputSpec]) -> list[tuple[InputSpec, Path, InputFormat]]:
    """Every input file with its format. What may not be opened (a FIFO, a device, a kernel
    file: curation.core.inputs.input_refusal), named or found in a folder, is a ConfigError: refusing
    the run fails closed, where skipping it would curate a part of the data without a word."""
    plan: list[tuple[InputSpec, Path, InputFormat]] = []
    for i, spec in enumerate(inputs):
        try:
            files = expand_input(spec.path)
            if not files:
                raise ConfigError(f"no file matches {spec.path}")
            plan += [(spec, path, spec.format if spec.format != "auto" else detect_format(path)) for path in files]
        except ConfigError as exc:
            raise ConfigError(f"inputs[{i}]: {exc}") from None
    return plan


def _shown(path: Path, base: Path | None = None) -> str:
    if not isinstance(path, Path):
        return str(path)  # a URL (s3://bucket/key) is shown whole
    absolute = Path(os.path.abspath(path))  # not resolve(): keep the names the user wrote
    try:
        return str(absolute.relative_to(base or Path.cwd()))
    except ValueError:
        return os.path.relpath(absolute, base) if base and absolute.anchor == base.anchor else str(absolute)


def _content_id(draft: Draft) -> str:
    fields = [draft.kind, draft.text, draft.messages, draft.chosen, draft.rejected]
    return hashlib.sha1(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _too_deep(value: dict[str, Any]) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return True
    return False


def _remove_control_chars(draft: Draft) -> int:
    """Remove _CONTROL characters from the draft's texts in place; returns how many."""
    removed = 0

    def clean(text: str | None) -> str | None:
        nonlocal removed
        if text is None or not _CONTROL.search(text):
            return text
        cleaned = _CONTROL.sub("", text)
        removed += len(text) - len(cleaned)
        return cleaned

    draft.text = clean(draft.text)
    for turns in (draft.messages, draft.chosen, draft.rejected):
        for turn in turns or ():
            if isinstance(turn.get("content"), str):
                turn["content"] = clean(turn["content"])
    return removed


def _error_detail(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class RunIds:
    """The ids given out, compactly: those kept as they came, and per input id given out more
    than once the last suffix number n (its ids ~2 .. ~n are all taken). A file of one row
    repeated holds one entry, not one per row. Given the same input ids in the same order, it
    gives out the same ids: the Ray ingest (curation/ingest/parallel.py) replays them."""

    def __init__(self) -> None:
        self.as_is: set[str] = set()
        self.suffixes: dict[str, int] = {}

    def unique(self, rid: str) -> str:
        candidate, n = rid, self.suffixes.get(rid, 1)
        while self.taken(candidate):  # also steps over input ids that look like "x~2"
            n += 1
            candidate = f"{rid}~{n}"
        if n == 1:
            self.as_is.add(candidate)
        else:
            self.suffixes[rid] = n
        return candidate

    def taken(self, candidate: str) -> bool:
        if candidate in self.as_is:
            return True
        suffixed = _SUFFIXED.fullmatch(candidate) if "~" in candidate else None
        return suffixed is not None and 2 <= int(suffixed[2]) <= self.suffixes.get(suffixed[1], 0)


class Collector:
    """Records and rejects in input order, with run-wide unique ids; with sinks, handed to them
    every `batch_size` rows."""

    def __init__(
        self,
        sinks: tuple[CorpusWriter, CorpusWriter] | None = None,
        batch_size: int = 10_000,
        limit: int | None = None,
        base: Path | None = None,
    ) -> None:
        self.records: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []
        self.sinks, self.batch_size, self.limit, self.base = sinks, batch_size, limit, base
        self.rows_read = 0
        self.control_chars_removed = 0
        self.files: list[FileReport] = []
        self.ids = RunIds()

    def close(self) -> tuple[Source, Source]:
        if self.sinks is None:
            return records_frame(self.records), rejects_frame(self.rejects)
        self.flush()
        return self.sinks[0].close(), self.sinks[1].close()

    def flush(self) -> None:
        if self.sinks is not None:
            self.sinks[0].write(records_frame(self.records))
            self.sinks[1].write(rejects_frame(self.rejects))
            self.records, self.rejects = [], []

    def read_file(self, spec: InputSpec, fmt: InputFormat, path: Path) -> None:
        shown = _shown(path, self.base)
        self.file = FileReport(shown, fmt, compression(path) if fmt != "hf_disk" else None)
        self.files.append(self.file)
        decoding = TextDecoding()
        self._read_rows(spec, self._rows(fmt, path, shown, spec, decoding))
        self.file.encoding = decoding.name  # as decided by the end of the file (or of the sample)

    def _read_rows(self, spec: InputSpec, rows: Iterator[Row]) -> None:
        shape: str | None = spec.shape
        first: dict | None = None
        if shape == "auto":  # the file's shape from the first object: rows before it are held, the rest stream
            ahead = []
            for row in rows:
                ahead.append(row)
                if isinstance(row.value, dict):
                    break
            first = ahead[-1].value if ahead and isinstance(ahead[-1].value, dict) else None
            shape = detect_shape(map_columns(first, spec.columns)) if first is not None else None
            rows = itertools.chain(ahead, rows)
        if spec.columns and first is not None:
            self.file.missing_columns = [c for c in spec.columns.values() if c not in first]
        for row in rows:
            if self.sinks is not None and len(self.records) + len(self.rejects) >= self.batch_size:
                self.flush()
            value = row.value
            if row.error:
                self.reject(row, *row.error)
            elif not isinstance(value, dict):
                self.reject(row, "not_an_object", f"expected an object, got {type(value).__name__}")
            else:
                value = map_columns(value, spec.columns)
                # A row the file's shape does not fit but another does (a mixed file) is read as that one.
                fits = spec.shape != "auto" or (shape and SHAPES[shape].fits(value))
                row_shape = shape if fits else detect_shape(value) or shape
                self.file.shapes[row_shape or "unknown"] += 1
                if row_shape is None:
                    keys = ", ".join(value) or "(none)"
                    detail = f"no shape fits keys: {keys}; set `shape:` or `columns:`"
                    self.reject(row, "unknown_shape", detail, id=input_id(value))
                else:
                    self.convert(row, value, row_shape)

    def _rows(self, fmt: InputFormat, path: Path, shown: str, spec: InputSpec, decoding: TextDecoding) -> Iterator[Row]:
        try:
            for n, row in enumerate(READERS[fmt](path, shown, spec, decoding)):
                if self.limit is not None and n >= self.limit:
                    return
                self.rows_read += 1
                self.file.rows_read += 1
                yield row
        except OSError as exc:  # e.g. no permission: the (rest of the) file is rejected, the run goes on
            self.rows_read += 1
            self.file.rows_read += 1
            yield Row(shown, error=("unreadable_file", f"{type(exc).__name__}: {exc}"))

    def convert(self, row: Row, value: dict, shape: str) -> None:
        spec = SHAPES[shape]
        try:
            drafts = spec.convert(value)
        except Bad as bad:
            self.reject(row, bad.reason, bad.detail, id=input_id(value))
            return
        extras = {k: v for k, v in value.items() if k not in spec.uses and v is not None}
        row_id = input_id(value)
        if extras and _too_deep(extras):  # orjson writes at most 254 levels: refuse the row, not the run
            self.reject(row, "too_deep", "a field is nested more than 254 levels deep", id=row_id)
            return
        for draft in drafts:
            self.add(row, draft, {**extras, **draft.meta, "shape": shape}, row_id)

    def add(self, row: Row, draft: Draft, meta: dict[str, Any], row_id: str | None) -> None:
        rid = draft.id or row_id or _content_id(draft)
        if draft.error:
            self.reject(row, *draft.error, draft=draft, id=rid, meta=meta_json(meta))
            return
        removed = _remove_control_chars(draft)
        if removed:
            meta["control_chars_removed"] = removed
            self.control_chars_removed += 1
        fields = {"id": rid, "source": row.source, "kind": draft.kind, "text": draft.text}
        fields |= {"messages": draft.messages, "chosen": draft.chosen, "rejected": draft.rejected}
        try:
            Record(**fields, meta=meta)
        except ValidationError as exc:
            detail = _error_detail(exc)
            self.reject(row, "invalid_record", detail, draft=draft, id=rid, meta=meta_json(meta))
            return
        # The validated fields are plain role/content dicts already, so they are the row:
        # Record.to_row (model_dump + json.dumps) would cost as much again as the validation.
        fields["id"] = self.unique(rid)
        if fields["id"] != rid:
            meta["input_id"] = rid
        fields["meta"] = meta_json(meta)
        self.records.append(fields)
        self.file.records += 1

    def unique(self, rid: str) -> str:
        return self.ids.unique(rid)

    def reject(
        self, row: Row, reason: str, detail: str, draft: Draft | None = None, **record: Any
    ) -> None:
        if draft is not None:
            record |= {"kind": draft.kind, "text": draft.text, "messages": draft.messages}
            record |= {"chosen": draft.chosen, "rejected": draft.rejected}
        record |= {"source": row.source, "stage": STAGE, "reason": reason, "detail": detail}
        self.rejects.append({**record, "raw": row.raw()})
        self.file.rejected += 1
        self.file.reasons[reason] += 1
