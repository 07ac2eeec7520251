"""Where data lives: a local path, or an fsspec URL (`s3://bucket/key`, `gs://`, `memory://`).

Local paths stay `pathlib.Path` (no fsspec on that path: as fast as before). A URL becomes a
`RemotePath`: the part of the Path interface the readers, the publish directory and the run
directory use (`/`, name, parent, open, exists, is_file, is_dir, iterdir, read/write), on the
fsspec filesystem of its protocol. Credentials never appear in a config: the filesystem reads
them from the environment (for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE,
and AWS_ENDPOINT_URL for an S3-compatible server), and `CURATE_STORAGE_OPTIONS` may add
non-secret fsspec options as JSON (e.g. {"s3": {"endpoint_url": "http://127.0.0.1:9000"}}).

Input paths are expanded on their store by curation.core.inputs."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import IO, Any

from schemas.base import ConfigError
from schemas.config import LOCAL_PROTOCOLS
from schemas.config import URL as _URL

OPTIONS_ENV = "CURATE_STORAGE_OPTIONS"
# The environment variables that hold storage credentials: registered with curation.llm.secrets
# by the CLI, so no message or log line shows them.
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN")
WORKER_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", OPTIONS_ENV)
BLOCK_SIZE = 8 << 20  # bytes fetched per read request of a remote file: few round trips per file


def is_remote(path: object) -> bool:
    """A URL with a protocol other than file:// (a Path never is: it cannot hold `//`)."""
    if isinstance(path, RemotePath):
        return True
    match = _URL.match(path) if isinstance(path, str) else None
    return match is not None and match.group(1).lower() not in LOCAL_PROTOCOLS


def as_path(path: str | Path | RemotePath) -> Path | RemotePath:
    """A RemotePath for a URL, else a Path (file:// prefix removed)."""
    if isinstance(path, RemotePath | Path):
        return path
    if is_remote(path):
        return RemotePath(path)
    match = _URL.match(path)
    return Path(match.group(2)) if match else Path(path)


def storage_options(protocol: str) -> dict[str, Any]:
    """Extra fsspec options for `protocol` from CURATE_STORAGE_OPTIONS (JSON): never secrets,
    which come from the filesystem's own environment variables."""
    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{OPTIONS_ENV}: not JSON ({exc.msg})") from None
    return dict(options.get(protocol, {})) if isinstance(options, dict) else {}


def storage_env() -> dict[str, str]:
    """Where the store is, as set in this process (endpoint, region, OPTIONS_ENV): what a Ray
    worker needs to open the same URLs as the driver. Never credentials: Ray's runtime_env agent
    writes the variables it is given to its log, so a node brings its own (an instance role, or
    the variables set where `ray start` ran)."""
    return {k: os.environ[k] for k in WORKER_ENV if k in os.environ}


@cache
def _filesystem(protocol: str, options: str) -> Any:
    import fsspec  # imported here: a local run never needs it

    # One instance per protocol and options, cached here only (reset_filesystems forgets it).
    # No listings cache: LATEST, the lock and version folders are written by other processes too.
    return fsspec.filesystem(protocol, skip_instance_cache=True, use_listings_cache=False, **json.loads(options))


def reset_filesystems() -> None:
    """Forget the filesystems made so far (they hold the credentials read when they were made)."""
    _filesystem.cache_clear()


def filesystem(protocol: str) -> Any:
    try:
        return _filesystem(protocol, json.dumps(storage_options(protocol), sort_keys=True))
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{protocol}://: no filesystem for this protocol ({exc})") from None


class RemotePath:
    """A file or folder on an fsspec filesystem, named by its URL (`str()` gives it back)."""

    __slots__ = ("protocol", "key")

    def __init__(self, url: str, key: str | None = None) -> None:
        if key is not None:  # (protocol, key) given apart
            self.protocol, self.key = url, key.strip("/")
            return
        match = _URL.match(url)
        if not match:
            raise ValueError(f"not a URL: {url}")
        self.protocol, self.key = match.group(1).lower(), match.group(2).strip("/")

    @property
    def fs(self) -> Any:
        return filesystem(self.protocol)

    def __str__(self) -> str:
        return f"{self.protocol}://{self.key}"

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and (self.protocol, self.key) == (other.protocol, other.key)

    def __hash__(self) -> int:
        return hash((self.protocol, self.key))

    def __lt__(self, other: RemotePath) -> bool:
        return str(self) < str(other)

    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(self.protocol, f"{self.key}/{str(part).strip('/')}")

    joinpath = __truediv__

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.protocol, self.key.rsplit("/", 1)[0] if "/" in self.key else self.key)

    @property
    def bucket(self) -> str:
        return self.key.split("/", 1)[0]

    def relative_to(self, other: RemotePath) -> Path:
        if not self.key.startswith(other.key + "/"):
            raise ValueError(f"{self} is not under {other}")
        return Path(self.key[len(other.key) + 1 :])

    def is_relative_to(self, other: object) -> bool:
        return isinstance(other, RemotePath) and (self == other or self.key.startswith(other.key + "/"))

    def resolve(self) -> RemotePath:
        return self

    def expanduser(self) -> RemotePath:
        return self

    def is_absolute(self) -> bool:
        return True

    def is_symlink(self) -> bool:
        return False  # object stores have no links

    def exists(self) -> bool:
        return bool(self.fs.exists(self.key))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.key))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.key))

    def size(self) -> int:
        return int(self.fs.size(self.key))

    def iterdir(self) -> Iterator[RemotePath]:
        for entry in self.fs.ls(self.key, detail=False, refresh=True):
            yield RemotePath(self.protocol, entry)

    def files(self) -> list[RemotePath]:
        """Every file under this folder, any depth."""
        return [RemotePath(self.protocol, f) for f in self.fs.find(self.key)]

    def open(self, mode: str = "rb", **kwargs: Any) -> IO:
        if "b" in mode:
            return self.fs.open(self.key, mode, block_size=BLOCK_SIZE, **kwargs)
        return self.fs.open(self.key, mode, **kwargs)

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.key))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        self.fs.pipe_file(self.key, data)  # one PUT: readers see the old object or the new one

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def put_if(self, data: bytes, etag: str | None) -> str | None:
        """A conditional put: only if nothing is there (`etag` None: If-None-Match: *), or only
        if the object is still the one with `etag` (If-Match). Returns the new object's ETag,
        None when the condition failed (someone else wrote first). S3 and S3-compatible stores."""
        if self.protocol not in ("s3", "s3a"):
            raise ConfigError(f"{self}: conditional writes are implemented for s3:// only")
        bucket, _, key = self.key.partition("/")
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            reply = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except (FileExistsError, FileNotFoundError):
            return None  # s3fs's names for 412 Precondition Failed and 404 (gone since we read it)
        except OSError as exc:  # s3fs keeps the botocore error as the cause
            code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):  # 412, or 409: a write racing ours
                return None
            raise
        return str(reply["ETag"])

    def etag(self) -> str | None:
        try:
            return str(self.fs.info(self.key)["ETag"])
        except FileNotFoundError:
            return None

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a key's prefix exists once something is under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        if self.fs.exists(self.key):
            self.fs.rm(self.key, recursive=True)

    def put(self, local: Path) -> None:
        """Upload a local file, or a folder's files, to this key (prefix)."""
        if local.is_dir():
            for f in sorted(p for p in local.rglob("*") if p.is_file()):
                self.fs.put_file(str(f), f"{self.key}/{f.relative_to(local).as_posix()}")
        else:
            self.fs.put_file(str(local), self.key)

    def get(self, local: Path) -> None:
        """Download this file, or every file under this prefix, to `local`."""
        if self.is_dir():
            for f in self.files():
                target = local / f.relative_to(self)
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f.key, str(target))
        else:
            self.fs.get_file(self.key, str(local))


def readable(path: Path | RemotePath) -> Any:
    """What a reader that takes a path or a file (polars, numpy) can read: the path itself when
    local, the object's bytes when remote (published files are read whole anyway)."""
    return io.BytesIO(path.read_bytes()) if isinstance(path, RemotePath) else path


def files_under(folder: Path | RemotePath) -> list:
    """Every file under a local or remote folder, any depth, sorted."""
    if isinstance(folder, RemotePath):
        return sorted(folder.files())
    return sorted(p for p in folder.rglob("*") if p.is_file())


def size_of(path: Path | RemotePath) -> int:
    return path.size() if isinstance(path, RemotePath) else path.stat().st_size


def remote_glob(url: str) -> list[RemotePath]:
    """The files a glob URL matches (`**` any depth), sorted."""
    path = RemotePath(url)
    fs = path.fs
    try:
        found = fs.glob(path.key, detail=True)
    except ValueError as exc:  # fsspec's glob rules: `**` only as a whole path component
        raise ConfigError(f"{url}: {exc}") from None
    return sorted(RemotePath(path.protocol, k) for k, info in found.items() if info.get("type") != "directory")


def has_magic(url: str) -> bool:
    return any(c in url for c in "*?[")


def check_reachable(path: RemotePath, what: str, must_exist: bool = False) -> None:
    """ConfigError naming `what` and the URL (never a credential) when the store refuses us: a
    wrong credential, a missing bucket, no such key (with `must_exist`), an unreachable endpoint.
    One listing of the bucket answers all of them."""
    fs = path.fs
    try:
        fs.ls(path.bucket, detail=False, refresh=True)
        if must_exist and not (has_magic(path.key) or fs.exists(path.key)):
            raise ConfigError(f"{what} {path}: no such file or prefix")
    except ConfigError:
        raise
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: the bucket {path.bucket} does not exist") from None
    except PermissionError:
        raise ConfigError(
            f"{what} {path}: access denied (check the credentials in the environment, e.g. AWS_ACCESS_KEY_ID)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a store's client raises many kinds; all mean "cannot use it"
        raise ConfigError(f"{what} {path}: cannot reach the store ({_safe(exc)})") from None


def _safe(exc: Exception) -> str:
    """An exception's class and first line (the CLI masks SECRET_ENV values in every message)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"
