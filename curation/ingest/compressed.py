"""Compressed inputs: gzip, zstd and bz2 told by a file's first bytes (whatever its name) and
decompressed as it is read, a corrupt or truncated stream failing as OSError (a reader's reject).
A path is a local `Path` or a `curation.core.storage.RemotePath`: both open the same way."""

from __future__ import annotations

import bz2
import gzip
import io
import zlib
from pathlib import Path
from typing import IO, Any


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
    if kind is None:  # peek() as a local file has it (a remote file has its own read-ahead)
        return path.open("rb") if isinstance(path, Path) else io.BufferedReader(path.open("rb"))
    # A remote file (curation.core.storage.RemotePath) is opened by its filesystem and decompressed here.
    source: Any = path if isinstance(path, Path) else path.open("rb")
    if kind == "gzip":
        stream: Any = gzip.open(source, "rb")
    elif kind == "bz2":
        stream = bz2.open(source, "rb")
    else:
        import pyarrow as pa  # pyarrow's zstd codec: no extra dependency

        stream = pa.input_stream(str(path) if source is path else source, compression="zstd")
    return io.BufferedReader(_Decompressed(stream, kind, None if source is path else source))


class _Decompressed(io.RawIOBase):
    """A decompressing stream whose failures (truncated, corrupt) are all OSError."""

    def __init__(self, stream: Any, kind: str, raw: IO[bytes] | None = None) -> None:
        self.stream, self.kind, self.raw = stream, kind, raw  # raw: the compressed file, closed with it

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self.stream.read(len(buffer))
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            raise OSError(f"corrupt {self.kind} stream: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        if self.raw is not None:
            self.raw.close()
        super().close()
