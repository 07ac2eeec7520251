"""A run directory on object storage: the run works in a local staging folder and this mirror
keeps the URL up to date with it.

Stages write local files (parquet shards, side folders, checkpoints renamed into place), so a run
into `s3://bucket/runs/x` works in `<cache>/runs/<hash of the URL>/` and:
- before its first step, pulls the URL's complete checkpoints (and the side files they name):
  a run restarted on another machine restores every stage the first one finished;
- after each step, pushes each new checkpoint (its manifest last: a checkpoint without one is
  ignored by a pull) and removes the remote frames of checkpoints the run discarded (PII scrub);
- at the end, pushes the run files (stats.json last: a reader that finds it finds the rest).

A local file counts as the object when its MD5 equals the object's ETag (single-part uploads);
otherwise it is transferred again, so a stale staging folder never stands in for the URL."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from curation.core.checkpoint import CHECKPOINTS, Checkpoint
from curation.core.storage import RemotePath, is_remote
from schemas.bundled import cache_dir

log = logging.getLogger(__name__)
LAST = "stats.json"  # the file that makes a folder a run directory: uploaded after every other
LOCAL_ONLY = (".scratch", ".prefect")  # under .checkpoints/: half-made corpora, Prefect's cache records


STAGING_ENV = "CURATE_STAGING_DIR"


def staging_dir(url: RemotePath) -> Path:
    """The local folder a run into `url` works in: one per URL under $CURATE_STAGING_DIR (else
    `<cache>/runs`), kept between runs as a cache of what the URL holds. It has the URL's last
    name (the dataset card names the run by its folder)."""
    root = Path(os.environ[STAGING_ENV]) if os.environ.get(STAGING_ENV) else cache_dir() / "runs"
    return root / hashlib.sha256(str(url).encode()).hexdigest()[:16] / url.name


@contextmanager
def pulled_run(run_dir: str, push: tuple[str, ...]) -> Iterator[str]:
    """The run directory to work on: RUN_DIR itself, or a URL's run files (not its checkpoints)
    pulled into the local staging folder, and its `push` entries pushed back however the work ended."""
    mirror = RunMirror.of(run_dir)
    if mirror is None:
        yield run_dir
        return
    local = str(mirror.pull_run())
    try:
        yield local
    finally:
        mirror.push_run(only=push)


class RunMirror:
    """The URL of a run directory and the local folder that stands in for it."""

    def __init__(self, url: RemotePath, local: Path | None = None) -> None:
        self.url, self.local = url, local or staging_dir(url)
        self.pushed: dict[str, str] = {}  # checkpoint folder -> the key the URL holds for it
        self.started = False  # pulled: this run works in the staging folder, its files go to the URL

    @classmethod
    def of(cls, out: object) -> RunMirror | None:
        """A mirror for a URL, None for a local path."""
        return cls(RemotePath(str(out))) if is_remote(out) else None

    # --- checkpoints ---------------------------------------------------------------------------

    def pull_checkpoints(self) -> list[str]:
        """Every complete checkpoint under URL/.checkpoints/ not already here for its key, with
        the side files its manifest names. Returns the folders pulled."""
        self.local.mkdir(parents=True, exist_ok=True)
        self.started = True
        remote = self.url / CHECKPOINTS
        if not remote.is_dir():
            return []
        pulled = []
        for folder in sorted(remote.iterdir()):
            if folder.name.startswith(".") or not (folder / "manifest.json").is_file():
                continue  # local-only folders, or an upload cut short (its manifest comes last)
            manifest = json.loads((folder / "manifest.json").read_text())
            local = self.local / CHECKPOINTS / folder.name
            self.pushed[folder.name] = manifest["key"]
            if _manifest_key(local) == manifest["key"] and all((local / f).is_dir() for f in manifest["frames"]):
                continue
            partial = local.with_name(local.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            for frame in manifest["frames"]:
                _download(folder / frame, partial / frame)
            _download(folder / "manifest.json", partial / "manifest.json")  # last, as on the store
            for name in manifest["outputs"]:
                _download(self.url / name, self.local / name)
            shutil.rmtree(local, ignore_errors=True)
            partial.rename(local)
            pulled.append(folder.name)
        if pulled:
            log.info("pulled checkpoints %s from %s", ", ".join(pulled), self.url)
        return pulled

    def push_checkpoints(self, checkpoints: Iterable[object]) -> None:
        """Upload each finished checkpoint the URL does not hold for its key; remove the remote
        copy of one the run discarded (its frames are gone here, e.g. rejects before a scrub)."""
        for checkpoint in checkpoints:
            if not isinstance(checkpoint, Checkpoint):
                continue  # held in memory: nothing to resume from
            name, remote = checkpoint.dir.name, self.url / CHECKPOINTS / checkpoint.dir.name
            manifest = checkpoint.manifest()
            if manifest is None:
                if self.pushed.pop(name, None) is not None:
                    remote.rmtree()
                continue
            if self.pushed.get(name) == manifest["key"]:
                continue
            (remote / "manifest.json").unlink(missing_ok=True)  # incomplete until its manifest is back
            for frame in manifest["frames"]:
                _upload(checkpoint.dir / frame, remote / frame)
            for output in manifest["outputs"]:
                _upload(self.local / output, self.url / output)
            (remote / "manifest.json").write_bytes((checkpoint.dir / "manifest.json").read_bytes())
            self.pushed[name] = manifest["key"]

    # --- the run files -------------------------------------------------------------------------

    def push_run(self, only: tuple[str, ...] | None = None) -> None:
        """Upload the run files (every top-level entry but .checkpoints/, or `only` these), a
        folder's remote files that the run no longer has removed; stats.json last."""
        entries = [p for p in sorted(self.local.iterdir()) if p.name != CHECKPOINTS and not p.is_symlink()]
        entries = [p for p in entries if only is None or p.name in only]
        for entry in sorted(entries, key=lambda p: p.name == LAST):
            _upload(entry, self.url / entry.name)

    def pull_run(self) -> Path:
        """Download the run files (not its checkpoints) into the staging folder; returns it."""
        self.local.mkdir(parents=True, exist_ok=True)
        for entry in self.url.iterdir():
            if entry.name != CHECKPOINTS:
                _download(entry, self.local / entry.name)
        return self.local


def _manifest_key(folder: Path) -> str | None:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError):
        return None


def _same(local: Path, etag: str | None) -> bool:
    """A local file equal to the object whose ETag is `etag` (an MD5 for single-part uploads)."""
    etag = (etag or "").strip('"')
    if not local.is_file() or not etag or "-" in etag:
        return False
    h = hashlib.md5(usedforsecurity=False)
    with local.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest() == etag


def _objects(remote: RemotePath) -> dict[str, dict]:
    """Every object under `remote` (or `remote` itself), by its path relative to `remote`."""
    found = remote.fs.find(remote.key, detail=True)
    return {"" if key.strip("/") == remote.key else key[len(remote.key) + 1 :]: info for key, info in found.items()}


def _download(remote: RemotePath, local: Path) -> None:
    """The file or folder `remote` to `local`, skipping files already equal; local files under a
    folder that the store does not have are removed."""
    objects = _objects(remote)
    for rel, info in objects.items():
        target = local / rel if rel else local
        if not _same(target, info.get("ETag")):
            target.parent.mkdir(parents=True, exist_ok=True)
            remote.fs.get_file(info["name"], str(target))
    if local.is_dir():
        for f in [p for p in local.rglob("*") if p.is_file() and p.relative_to(local).as_posix() not in objects]:
            f.unlink()


def _upload(local: Path, remote: RemotePath) -> None:
    """The file or folder `local` to `remote`, skipping objects already equal; objects under a
    folder that the local one does not have are removed."""
    objects = _objects(remote)
    files = {"": local} if local.is_file() else {
        p.relative_to(local).as_posix(): p for p in sorted(local.rglob("*")) if p.is_file()}
    for rel, f in sorted(files.items(), key=lambda item: item[0] == LAST):
        if not _same(f, objects.get(rel, {}).get("ETag")):
            remote.fs.put_file(str(f), f"{remote.key}/{rel}" if rel else remote.key)
    for rel in objects.keys() - files.keys():
        remote.fs.rm_file(f"{remote.key}/{rel}" if rel else remote.key)
