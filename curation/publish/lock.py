"""One refresh at a time per publish directory: an exclusive lock held from reading the latest
version to writing LATEST, so two overlapping refreshes publish consecutive versions (the second
dedups against the first's) instead of racing. Stale temporary folders of a killed publish are
removed once the lock is held.

On object storage (no flock) the lock is an object, `.lock`, holding its holder and a lease:
created with a conditional put (If-None-Match: *) so one of two refreshes wins, renewed every
LEASE_SECONDS / 3 with If-Match on its own ETag, deleted at the end. A killed holder stops
renewing; once its lease has run out a waiter takes it over with If-Match on the stale lock's
ETag, so of two waiters only one can."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curation.core.storage import RemotePath, is_remote
from schemas.base import ConfigError

LOCK_FILE = ".lock"
LEASE_SECONDS = 60.0  # an object lock not renewed for this long is taken over (its holder died)
POLL_SECONDS = 1.0  # how often a waiting refresh asks for the object lock
# What publish() writes before its renames: `.v0003.<random>/` and `.LATEST.<random>`.
_STALE = re.compile(r"^\.(v\d{4,}|LATEST)\.")
log = logging.getLogger(__name__)


@contextmanager
def publish_lock(publish_dir: str | Path, wait: bool = True) -> Iterator[None]:
    """Hold the publish directory's lock. Another holder: wait (saying so), or with
    `wait=False` raise ConfigError at once. The lock goes with the process (flock): a killed
    refresh never leaves it taken."""
    if is_remote(publish_dir):
        with _object_lock(RemotePath(str(publish_dir)), wait):
            yield
        return
    folder = Path(publish_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                    raise _busy(folder) from None
            log.warning("%s: another refresh is publishing here; waiting for it to finish", folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        _remove_stale(folder)
        yield
    finally:
        os.close(fd)  # releases the lock


def _busy(folder: object) -> ConfigError:
    return ConfigError(f"{folder}: another refresh is publishing here (publish.lock: fail); try again when it ends")


@contextmanager
def _object_lock(folder: RemotePath, wait: bool) -> Iterator[None]:
    lock = folder / LOCK_FILE
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    etag = _take(lock, holder)
    if etag is None and not wait:
        raise _busy(folder)
    if etag is None:
        log.warning("%s: another refresh is publishing here; waiting for it to finish", folder)
    while etag is None:
        time.sleep(POLL_SECONDS)
        etag = _take(lock, holder)
    lease = _Lease(lock, holder, etag)
    lease.start()
    try:
        _remove_stale(folder)
        yield
    finally:
        lease.release()


def _body(holder: str) -> bytes:
    return json.dumps({"holder": holder, "expires": time.time() + LEASE_SECONDS}).encode()


def _take(lock: RemotePath, holder: str) -> str | None:
    """The lock's ETag when this holder got it: free, or held by a lease that ran out."""
    etag = lock.put_if(_body(holder), None)
    if etag is not None:
        return etag
    stale = lock.etag()
    try:
        held = json.loads(lock.read_bytes())
    except (FileNotFoundError, ValueError):
        return None  # released (or being written) meanwhile: the next try decides
    if stale is None or held.get("expires", 0) > time.time():
        return None
    log.warning("%s: the lock of %s ran out (its refresh stopped); taking it over", lock, held.get("holder"))
    return lock.put_if(_body(holder), stale)


class _Lease(threading.Thread):
    """Renews the lock object while the refresh runs; deletes it at the end if it is still ours."""

    def __init__(self, lock: RemotePath, holder: str, etag: str) -> None:
        super().__init__(name="publish-lock-lease", daemon=True)
        self.lock, self.holder, self.etag, self.stop = lock, holder, etag, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(LEASE_SECONDS / 3):
            etag = self.lock.put_if(_body(self.holder), self.etag)
            if etag is None:
                log.error("%s: the lock was taken over (a renewal came too late); stop other refreshes here", self.lock)
                return
            self.etag = etag

    def release(self) -> None:
        self.stop.set()
        self.join()
        if self.lock.etag() == self.etag:
            self.lock.unlink(missing_ok=True)


def _remove_stale(folder: Path | RemotePath) -> None:
    for path in folder.iterdir():
        if _STALE.match(path.name):
            log.warning("%s: removing %s, left by a publish that did not finish", folder, path.name)
            if isinstance(path, RemotePath):
                path.rmtree()
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
