"""Readers: a file -> input rows (a parsed JSON value, its source and raw bytes), one reader
per input format, the format told from a file's name, and compressed files (gzip, zstd, bz2)
opened by their magic bytes.

Only regular files are read (a FIFO or a device would block or never end): `not_regular` says
what anything else is. A JSON Lines line longer than MAX_LINE_BYTES is rejected as
`line_too_long` without being held in memory.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from curation.ingest.shapes import _fits, map_columns
from schemas.config import COMPRESSION_SUFFIXES, SUFFIX_FORMATS, ConfigError, InputFormat, InputSpec

RAW_LIMIT = 2000  # characters of input text kept in a reject's `raw`
PARQUET_BATCH = 10_000  # rows read from a parquet input at a time
MAX_LINE_BYTES = 16 << 20  # a JSON Lines row longer than 16 MiB is rejected (line_too_long)


def compression(path: Path) -> str | None:
    """gzip, zstd or bz2 when the file's first bytes say so (whatever its name), else None."""
    try:
        with path.open("rb") as f:
            head = f.read(10)
    except OSError:
        return None  # the reader reports an unreadable file
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bz2"
    return None


def open_input(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when it is compressed; a corrupt stream raises OSError."""
    kind = compression(path)
    if kind is None:
        return path.open("rb")
    if kind == "gzip":
        stream: Any = gzip.open(path, "rb")
    elif kind == "bz2":
        stream = bz2.open(path, "rb")
    else:
        import pyarrow as pa  # pyarrow's zstd codec: no extra dependency

        stream = pa.input_stream(str(path), compression="zstd")
    return io.BufferedReader(_Decompressed(stream, kind))


class _Decompressed(io.RawIOBase):
    """A decompressing stream whose failures (truncated, corrupt) are all OSError."""

    def __init__(self, stream: Any, kind: str) -> None:
        self.stream, self.kind = stream, kind

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self.stream.read(len(buffer))
        except (OSError, EOFError, ValueError) as exc:
            raise OSError(f"corrupt {self.kind} stream: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


def detect_format(path: Path) -> InputFormat:
    """The input format from a file's extension (after .gz / .zst / .bz2), or hf_disk for a
    `save_to_disk` folder."""
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf_disk"
        raise ConfigError(f"{path}: a directory that is not a `datasets.save_to_disk` folder")
    name = Path(path.name.lower())
    inner = name.with_suffix("") if name.suffix in COMPRESSION_SUFFIXES else name
    fmt = SUFFIX_FORMATS.get(inner.suffix)
    if fmt is None:
        known = ", ".join([*sorted(set(SUFFIX_FORMATS.values())), "hf_disk"])
        kind = compression(path)
        if kind:
            raise ConfigError(
                f"{path}: a {kind}-compressed file whose name does not say what is inside; name it like"
                f" data.jsonl.gz or set `format:` ({known}); compressed files are read as they are"
            )
        raise ConfigError(
            f"{path}: cannot tell the format from the name; set `format:` ({known};"
            " .gz, .zst and .bz2 files are read too)"
        )
    return fmt


def not_regular(path: Path) -> str | None:
    """What `path` is when it is neither a regular file nor a directory, else None."""
    try:
        mode = path.stat().st_mode  # follows symlinks: a link to a regular file is fine
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        return "a broken symlink" if path.is_symlink() else f"unreadable ({exc.strerror})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


@dataclass(slots=True)
class _Row:
    """One input row: a parsed JSON value, or the reason it could not be parsed."""

    source: str
    value: Any = None
    line: bytes | None = None  # the input bytes, when the row came from a line of text
    error: tuple[str, str] | None = None  # (reason, detail)

    def raw(self) -> str | None:
        if self.line is not None:
            return self.line.decode("utf-8", errors="replace")[:RAW_LIMIT]
        if self.error:
            return None  # a file that could not be read at all
        try:
            return orjson.dumps(self.value).decode()[:RAW_LIMIT]
        except TypeError:  # nested deeper than orjson writes
            return None


_Reader = Callable[[Path, str, InputSpec], Iterator[_Row]]
_Tables = Iterable[tuple[str | None, pl.DataFrame]]  # (split name or None, table or a batch of it)


def _parse(source: str, data: bytes) -> _Row:
    try:
        return _Row(source, orjson.loads(data), data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            return _Row(source, line=data, error=("bad_encoding", str(bad)))
        return _Row(source, line=data, error=("bad_json", str(exc)))


def _read_bytes(path: Path) -> bytes:
    with open_input(path) as f:
        return f.read().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM is not content


def _json_lines(data: bytes, shown: str) -> Iterator[_Row]:
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield _parse(f"{shown}:{n}", line)


def _read_jsonl(path: Path, shown: str, spec: InputSpec) -> Iterator[_Row]:
    with open_input(path) as f:  # a line at a time: the file is never all in memory
        for n, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                size = len(line) + _skip_line(f)
                detail = f"{size:,} bytes or more; a line may have at most {MAX_LINE_BYTES:,}"
                yield _Row(f"{shown}:{n}", line=line[:RAW_LIMIT], error=("line_too_long", detail))
                continue
            line = line.removeprefix(b"\xef\xbb\xbf") if n == 1 else line
            if line.strip():
                yield _parse(f"{shown}:{n}", line.rstrip(b"\r\n"))


def _skip_line(f: io.BufferedReader) -> int:
    """Read past the rest of an over-long line, a MiB at a time; returns the bytes skipped."""
    skipped = 0
    while chunk := f.readline(1 << 20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _read_json(path: Path, shown: str, spec: InputSpec) -> Iterator[_Row]:
    data = _read_bytes(path)
    whole = _parse(shown, data)
    value = whole.value
    if whole.error:
        first = next((line for line in data.splitlines() if line.strip()), b"")
        if isinstance(_parse(shown, first).value, dict):
            yield from _json_lines(data, shown)  # `Dataset.to_json` writes JSON Lines to *.json
        else:
            yield whole
    elif isinstance(value, list):
        yield from (_Row(f"{shown}#{i}", v) for i, v in enumerate(value))
    elif isinstance(value, dict) and not _fits(map_columns(value, spec.columns), spec.shape):
        # A container such as {"train": [...], "test": [...]}: each array of objects is a table.
        tables = [k for k, v in value.items() if _objects(v)]
        for key in tables:
            yield from (_Row(f"{shown}#{key}[{i}]", v) for i, v in enumerate(value[key]))
        if not tables:
            yield _Row(f"{shown}#0", value)
    else:
        yield _Row(f"{shown}#0", value)


def _objects(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _table_reader(load: Callable[[Path], _Tables]) -> _Reader:
    """A reader for a tabular format; its rows go through JSON, so all formats share one path."""

    def read(path: Path, shown: str, spec: InputSpec) -> Iterator[_Row]:
        seen: dict[str | None, int] = {}  # rows so far per split: a split may come in batches
        batches = iter(load(path))
        while True:
            try:
                batch = next(batches, None)
                if batch is None:
                    return
                split, frame = batch
                # polars writes JSON-safe values (dates as strings) and each row's raw text.
                buffer = io.BytesIO()
                frame.write_ndjson(buffer)
            except Exception as exc:  # noqa: BLE001 - whatever the reader raises, reject the rest
                yield _Row(shown, error=("unreadable_file", f"{type(exc).__name__}: {exc}"))
                return
            prefix, first = f"{shown}[{split}]" if split else shown, seen.get(split, 0)
            lines = buffer.getvalue().splitlines()
            seen[split] = first + len(lines)
            yield from (_parse(f"{prefix}#{first + i}", line) for i, line in enumerate(lines))

    return read


def _load_parquet(path: Path) -> Iterator[tuple[str | None, pl.DataFrame]]:
    import pyarrow.parquet as pq

    source = path if compression(path) is None else io.BytesIO(_read_bytes(path))
    for batch in pq.ParquetFile(source).iter_batches(batch_size=PARQUET_BATCH):  # row groups, lazily
        yield None, pl.from_arrow(batch)  # type: ignore[misc]


def _load_csv(path: Path) -> _Tables:
    # All columns as strings; an empty field (quoted or not) is missing, like a null.
    frame = pl.read_csv(path if compression(path) is None else _read_bytes(path), infer_schema=False)
    return [(None, frame.with_columns(pl.all().replace("", None)))]


def _load_hf_disk(path: Path) -> _Tables:
    import datasets  # imported here: it is slow to import and only this format needs it

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        return [(str(split), ds.to_polars()) for split, ds in loaded.items()]
    return [(str(loaded.split) if loaded.split else None, loaded.to_polars())]


def _read_txt(path: Path, shown: str, spec: InputSpec) -> Iterator[_Row]:
    data = _read_bytes(path)
    docs = _paragraphs(data) if spec.txt_split == "paragraph" else [(1, data)]
    for start, chunk in docs:
        source = f"{shown}:{start}"
        try:
            yield _Row(source, {"text": chunk.decode("utf-8")}, chunk)
        except UnicodeDecodeError as bad:
            yield _Row(source, line=chunk, error=("bad_encoding", str(bad)))


def _paragraphs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Blank-line separated paragraphs with their 1-based start line."""
    start, lines = 0, []
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            start = start if lines else n
            lines.append(line)
        elif lines:
            yield start, b"\n".join(lines)
            lines = []
    if lines:
        yield start, b"\n".join(lines)


_READERS: dict[str, _Reader] = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "parquet": _table_reader(_load_parquet),
    "csv": _table_reader(_load_csv),
    "txt": _read_txt,
    "hf_disk": _table_reader(_load_hf_disk),
}
