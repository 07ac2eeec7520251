"""One refresh at a time per publish directory: an exclusive lock held from reading the latest
version to writing LATEST, so two overlapping refreshes publish consecutive versions (the second
dedups against the first's) instead of racing. Stale temporary folders of a killed publish are
removed once the lock is held."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from schemas.base import ConfigError

LOCK_FILE = ".lock"
# What publish() writes before its renames: `.v0003.<random>/` and `.LATEST.<random>`.
_STALE = re.compile(r"^\.(v\d{4,}|LATEST)\.")
log = logging.getLogger(__name__)


@contextmanager
def publish_lock(publish_dir: str | Path, wait: bool = True) -> Iterator[None]:
    """Hold the publish directory's lock. Another holder: wait (saying so), or with
    `wait=False` raise ConfigError at once. The lock goes with the process (flock): a killed
    refresh never leaves it taken."""
    folder = Path(publish_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise ConfigError(
                    f"{folder}: another refresh is publishing here (publish.lock: fail); try again when it ends"
                ) from None
            log.warning("%s: another refresh is publishing here; waiting for it to finish", folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        _remove_stale(folder)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale(folder: Path) -> None:
    for path in folder.iterdir():
        if _STALE.match(path.name):
            log.warning("%s: removing %s, left by a publish that did not finish", folder, path.name)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
