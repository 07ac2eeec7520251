"""Readers: a file -> input rows (a parsed JSON value, its source and raw bytes), one reader
per input format, the format told from a file's name; compressed files (gzip, zstd, bz2) are
opened by their magic bytes (curation/ingest/compressed.py).

Only files `curation.core.inputs.input_refusal` allows reach a reader (expand_input refuses the rest).
A path is a local `Path` or a `curation.core.storage.RemotePath` (s3://...): both open the same way.
A JSON Lines line longer than MAX_LINE_BYTES is rejected as `line_too_long` without being held
in memory.

Text (JSON Lines, JSON, CSV, plain text) is decoded per file (`TextDecoding`): a byte order mark
says UTF-8, UTF-16 or UTF-32; else the first HEAD_BYTES (and, while those are ASCII, the first
non-ASCII line) say UTF-8 or cp1252 (which covers Latin-1). Every row reaches the parser as
UTF-8; a line that is not valid in the file's encoding is rejected alone as `bad_encoding`.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from curation.ingest.compressed import compression, open_input
from curation.ingest.shapes import fits_shape, map_columns
from schemas.config import (
    COMPRESSION_SUFFIXES,
    CP1252_FILL,
    SUFFIX_FORMATS,
    ConfigError,
    InputFormat,
    InputSpec,
    text_encoding,
)

RAW_LIMIT = 2000  # characters of input text kept in a reject's `raw`
PARQUET_BATCH = 10_000  # rows read from a parquet input at a time
MAX_LINE_BYTES = 16 << 20  # a JSON Lines row longer than 16 MiB is rejected (line_too_long)
HEAD_BYTES = 1 << 16  # what a text file's encoding is told from (more only while it is ASCII)
_MARK = "curate.mark_undecodable"


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


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Each undecodable byte becomes the lone surrogate U+DC00 + byte, which no valid text
    decodes to: the line holding it is known bad and its bytes can be named. Decoding UTF-8
    again, a mark the UTF-16/32 transcoding wrote (a surrogate, `surrogatepass`) reads as itself."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    if exc.encoding in ("utf-8", "utf8"):
        try:
            return codecs.lookup_error("surrogatepass")(exc)
        except UnicodeDecodeError:
            pass
    return "".join(chr(0xDC00 + b) for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error(_MARK, _mark_undecodable)


class TextDecoding:
    """A text file's encoding (shown per file: FileReport.encoding) and its text as UTF-8 bytes.

    `name` is None for a file not read as text (parquet, save_to_disk), "ascii" while every
    byte so far was ASCII (the first non-ASCII text then decides utf-8 or cp1252)."""

    def __init__(self) -> None:
        self.name: str | None = None

    def start(self, head: bytes, whole: bool) -> int:
        """Decide from the file's first bytes; returns how many to skip (a UTF-8 byte order mark:
        the UTF-16/32 codecs read their own)."""
        self.name = text_encoding(head, whole) or "ascii"
        return len(codecs.BOM_UTF8) if self.name == "utf-8-sig" else 0

    @property
    def wide(self) -> bool:
        """UTF-16 or UTF-32: lines are split after transcoding to UTF-8."""
        return self.name is not None and self.name.startswith(("utf-16", "utf-32"))

    def utf8(self, data: bytes) -> bytes:
        """`data` (whole lines) as UTF-8; bytes the file's encoding cannot decode are left for
        the parser to reject (`undecodable` names them)."""
        if data.isascii():
            return data
        if self.name == "ascii":
            self.name = "utf-8" if text_encoding(data, whole=True) == "utf-8" else "cp1252"
        if self.name == "cp1252":
            return data.decode("cp1252", CP1252_FILL).encode()
        return data  # UTF-8, or UTF-16/32 already transcoded


def undecodable(data: bytes, encoding: str) -> str:
    """A bad_encoding detail: the first undecodable byte of UTF-8 `data`, and where it is."""
    text = data.decode("utf-8", _MARK)
    at = next((i for i, ch in enumerate(text) if "\udc00" <= ch <= "\udcff"), 0)
    return f"not valid {encoding} (the file's encoding): byte 0x{ord(text[at]) - 0xDC00:02x} at character {at + 1}"


def open_text(path: Path, decoding: TextDecoding) -> IO[bytes]:
    """The file's text as a stream of UTF-8 lines (cp1252 lines are converted one by one, in
    `decoding.utf8`), past any byte order mark; `decoding` learns the encoding."""
    f = open_input(path)
    head = f.peek(HEAD_BYTES)[:HEAD_BYTES]
    f.read(decoding.start(head, whole=len(head) < HEAD_BYTES))
    return io.BufferedReader(_Transcoded(f, decoding.name)) if decoding.wide else f


class _Transcoded(io.RawIOBase):
    """A UTF-16 or UTF-32 stream as UTF-8 bytes. An undecodable unit becomes a mark (a lone
    surrogate, written with `surrogatepass`): invalid UTF-8, so its line is rejected alone."""

    def __init__(self, stream: IO[bytes], codec: str) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder(codec)(_MARK)
        self.pending, self.at = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self.at == len(self.pending):
            chunk = self.stream.read(1 << 16)
            self.pending, self.at = self.decoder.decode(chunk, final=not chunk).encode("utf-8", "surrogatepass"), 0
            if not chunk:
                break
        n = min(len(buffer), len(self.pending) - self.at)
        buffer[:n] = self.pending[self.at : self.at + n]
        self.at += n
        return n

    def close(self) -> None:
        self.stream.close()
        super().close()


@dataclass(slots=True)
class Row:
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


_Reader = Callable[[Path, str, InputSpec, TextDecoding], Iterator[Row]]
_Tables = Iterable[tuple[str | None, pl.DataFrame]]  # (split name or None, table or a batch of it)


def _parse(source: str, data: bytes, encoding: str | None = "utf-8") -> Row:
    """A row from UTF-8 JSON text; a byte that is not (valid in the file's `encoding`) makes it bad_encoding."""
    try:
        return Row(source, orjson.loads(data), data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return Row(source, line=data, error=("bad_encoding", undecodable(data, encoding or "utf-8")))
        return Row(source, line=data, error=("bad_json", str(exc)))


def _read_bytes(path: Path) -> bytes:
    with open_input(path) as f:
        return f.read()


def _read_text(path: Path, decoding: TextDecoding) -> bytes:
    """A whole text file as UTF-8 (bytes the encoding cannot decode left as they are)."""
    with open_text(path, decoding) as f:
        return decoding.utf8(f.read())


def _json_lines(data: bytes, shown: str, encoding: str | None) -> Iterator[Row]:
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield _parse(f"{shown}:{n}", line, encoding)


def _read_jsonl(path: Path, shown: str, spec: InputSpec, decoding: TextDecoding) -> Iterator[Row]:
    with open_text(path, decoding) as f:  # a line at a time: the file is never all in memory
        for n, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                size = len(line) + _skip_line(f)
                detail = f"{size:,} bytes or more; a line may have at most {MAX_LINE_BYTES:,}"
                yield Row(f"{shown}:{n}", line=line[:RAW_LIMIT], error=("line_too_long", detail))
                continue
            if line.strip():
                yield _parse(f"{shown}:{n}", decoding.utf8(line.rstrip(b"\r\n")), decoding.name)


def _skip_line(f: io.BufferedReader) -> int:
    """Read past the rest of an over-long line, a MiB at a time; returns the bytes skipped."""
    skipped = 0
    while chunk := f.readline(1 << 20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _read_json(path: Path, shown: str, spec: InputSpec, decoding: TextDecoding) -> Iterator[Row]:
    data = _read_text(path, decoding)
    whole = _parse(shown, data, decoding.name)
    value = whole.value
    if whole.error:
        first = next((line for line in data.splitlines() if line.strip()), b"")
        if isinstance(_parse(shown, first).value, dict):
            yield from _json_lines(data, shown, decoding.name)  # `Dataset.to_json` writes JSON Lines to *.json
        else:
            yield whole
    elif isinstance(value, list):
        yield from (Row(f"{shown}#{i}", v) for i, v in enumerate(value))
    elif isinstance(value, dict) and not fits_shape(map_columns(value, spec.columns), spec.shape):
        # A container such as {"train": [...], "test": [...]}: each array of objects is a table.
        tables = [k for k, v in value.items() if _objects(v)]
        for key in tables:
            yield from (Row(f"{shown}#{key}[{i}]", v) for i, v in enumerate(value[key]))
        if not tables:
            yield Row(f"{shown}#0", value)
    else:
        yield Row(f"{shown}#0", value)


def _objects(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _table_reader(load: Callable[[Path, TextDecoding], _Tables]) -> _Reader:
    """A reader for a tabular format; its rows go through JSON, so all formats share one path."""

    def read(path: Path, shown: str, spec: InputSpec, decoding: TextDecoding) -> Iterator[Row]:
        seen: dict[str | None, int] = {}  # rows so far per split: a split may come in batches
        try:
            batches = iter(load(path, decoding))
        except _Undecodable as exc:
            yield Row(shown, error=("bad_encoding", str(exc)))
            return
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
                yield Row(shown, error=("unreadable_file", f"{type(exc).__name__}: {exc}"))
                return
            prefix, first = f"{shown}[{split}]" if split else shown, seen.get(split, 0)
            lines = buffer.getvalue().splitlines()
            seen[split] = first + len(lines)
            yield from (_parse(f"{prefix}#{first + i}", line) for i, line in enumerate(lines))

    return read


class _Undecodable(Exception):
    """A CSV file with bytes its encoding cannot decode: a row may span lines, so the file is
    rejected whole (bad_encoding), naming the line."""


def _load_parquet(path: Path, decoding: TextDecoding) -> Iterator[tuple[str | None, pl.DataFrame]]:
    import pyarrow.parquet as pq

    if compression(path) is not None:
        source: Any = io.BytesIO(_read_bytes(path))
    else:  # a remote file is read by ranges: the footer, then one row group at a time
        source = path if isinstance(path, Path) else path.open("rb")
    for batch in pq.ParquetFile(source).iter_batches(batch_size=PARQUET_BATCH):  # row groups, lazily
        yield None, pl.from_arrow(batch)  # type: ignore[misc]


def _load_csv(path: Path, decoding: TextDecoding) -> _Tables:
    data = _read_text(path, decoding)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _Undecodable(f"line {line}: {undecodable(data.splitlines()[line - 1], decoding.name or 'utf-8')}") from None
    # All columns as strings; an empty field (quoted or not) is missing, like a null.
    frame = pl.read_csv(data, infer_schema=False)
    return [(None, frame.with_columns(pl.all().replace("", None)))]


def _load_hf_disk(path: Path, decoding: TextDecoding) -> _Tables:
    import datasets  # imported here: it is slow to import and only this format needs it

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        return [(str(split), ds.to_polars()) for split, ds in loaded.items()]
    return [(str(loaded.split) if loaded.split else None, loaded.to_polars())]


def _read_txt(path: Path, shown: str, spec: InputSpec, decoding: TextDecoding) -> Iterator[Row]:
    data = _read_text(path, decoding)
    docs = _paragraphs(data) if spec.txt_split == "paragraph" else [(1, data)]
    for start, chunk in docs:
        source = f"{shown}:{start}"
        try:
            yield Row(source, {"text": chunk.decode("utf-8")}, chunk)
        except UnicodeDecodeError:
            yield Row(source, line=chunk, error=("bad_encoding", undecodable(chunk, decoding.name or "utf-8")))


# A Markdown code fence line: 3+ backticks or tildes, indented or not (fences nest in list items,
# and the format filter counts them so), then an info string ("python").
_FENCE = re.compile(rb"[ \t]*(`{3,}|~{3,})(.*)")
_LANGUAGE = re.compile(rb"[\w{.]")  # what an info string starts with: "python", "{.python}"


def _width(line: bytes) -> int:
    return len(line.strip().decode("utf-8", errors="replace"))


def _paragraphs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Blank-line separated paragraphs with their 1-based start line. A blank line inside a
    fenced code block does not end one (code is not cut into pieces); a fence never closed runs to
    the end of the file, but a paragraph held open past MAX_LINE_BYTES ends at its next blank line
    (one stray fence does not make the rest of a large file one record)."""
    start, lines, size, fence = 0, [], 0, b""
    for n, line in enumerate(data.splitlines(), 1):
        mark = _FENCE.match(line)
        run, info = (mark.group(1), mark.group(2).strip()) if mark else (b"", b"")
        if run and not (run[:1] == b"`" and b"`" in info):  # "```inline```" is inline code
            # An info string names a language ("~~~~^^^" marks a traceback); under a line of
            # text, a bare run at least as long is a reStructuredText heading's underline.
            language = not info or _LANGUAGE.match(info)
            if not fence and language and (not lines or info or len(run) < _width(lines[-1])):
                fence = run
            elif fence and run[:1] == fence[:1] and len(run) >= len(fence) and not info:
                fence = b""  # closed by a run of the same kind, at least as long, alone on its line
        if line.strip() or (fence and size <= MAX_LINE_BYTES):
            start = start if lines else n
            lines.append(line)
            size += len(line) + 1
        elif lines:
            yield start, b"\n".join(lines)
            lines, size, fence = [], 0, b""
    if lines:
        yield start, b"\n".join(lines)


READERS: dict[str, _Reader] = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "parquet": _table_reader(_load_parquet),
    "csv": _table_reader(_load_csv),
    "txt": _read_txt,
    "hf_disk": _table_reader(_load_hf_disk),
}
