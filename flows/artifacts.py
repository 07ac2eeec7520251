"""Prefect artifacts of a curate run, read from its run directory (never from live DataFrames).

Keys are stable per config (`curate-<config stem>-summary`, ...), so the UI's Artifacts page
shows one history per key and runs of the same config can be compared over time.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from curation.core.ending import api_unreachable
from curation.core.stats import RunStats
from curation.report.summary import summary_markdown, tables

log = logging.getLogger(__name__)


def slug(name: str) -> str:
    """An artifact-key-safe form of a name: lowercase letters, digits and single dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", name.lower())).strip("-") or "run"


def key(config_stem: str, name: str) -> str:
    """The artifact key of one of a curate run's artifacts (a summary table's name, `summary`,
    `report`, `jury_progress`): stable per config, so the UI keeps one history per key."""
    return f"curate-{slug(config_stem)}-{name.replace('_', '-')}"


def publish_run(run_dir: Path, config_stem: str) -> list[str]:
    """Summary, the summary's tables (removal reasons, duplicate clusters, data hygiene, jury
    scores) and the report link; returns the keys."""
    stats = RunStats.read(run_dir)
    report = run_dir / "report.html"
    published = [key(config_stem, "summary")]
    create_markdown_artifact(summary_markdown(stats, run_dir), key=published[0], description=f"curate funnel: {run_dir}")
    for name, (rows, description) in tables(stats, run_dir).items():
        published.append(key(config_stem, name))
        create_table_artifact(rows, key=published[-1], description=description)
    if report.is_file():
        link = key(config_stem, "report")
        create_link_artifact(report.resolve().as_uri(), link_text=str(report), key=link, description="HTML quality report")
        published.append(link)
    return published


class ProgressArtifact:
    """A `(done, total)` callback that keeps one Prefect progress artifact up to date.

    Created on the first call, then updated at most every `every` seconds (and at the end).
    Artifact failures never stop the work: progress is a display. A Prefect API that does not
    answer ends the updates (each would wait out the client's retries, slowing the stage).
    """

    def __init__(self, key: str, description: str, every: float = 1.0) -> None:
        self.key, self.description, self.every = key, description, every
        self.id: UUID | None = None
        self._last = 0.0
        self._off = False

    def __call__(self, done: int, total: int) -> None:
        percent = 100.0 * done / total if total > 0 else 100.0
        now = time.monotonic()
        if self._off or (self.id is not None and done < total and now - self._last < self.every):
            return
        self._last = now
        text = f"{self.description}: {done} of {total}"
        try:
            if self.id is None:
                self.id = create_progress_artifact(percent, key=self.key, description=text)
            else:
                update_progress_artifact(self.id, percent, description=text)
        except Exception as exc:  # noqa: BLE001 - a display problem must not fail a stage
            log.debug("progress artifact %s: %s", self.key, exc)
            self._off = api_unreachable(exc) is not None


@contextmanager
def progress_shown(hook: ContextVar[Callable[[int, int], None] | None], key: str | None, description: str) -> Iterator[None]:
    """While the block runs, the progress a stage reports through `hook` (its ContextVar: the jury's,
    training's) kept in a ProgressArtifact under `key`; without a key, nothing is shown."""
    token = hook.set(ProgressArtifact(key, description)) if key else None
    try:
        yield
    finally:
        if token is not None:
            hook.reset(token)
