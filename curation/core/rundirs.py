"""Where a run directory goes: runs/ beside the config, a new `<config>-<time>` per invocation,
the latest run a config made (what `curate train` trains on), a `{time}` pattern claimed, and the
folder a run works in (`run_folder`: a URL's local staging folder)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from curation.core import ending
from curation.core.ending import INTERRUPTED
from curation.core.mirror import RunMirror
from curation.core.storage import is_remote
from schemas.config import ConfigError


def runs_dir(config_path: Path) -> Path:
    """runs/ beside the config: where its runs go, wherever the command starts."""
    return config_path.resolve().parent / "runs"


def new_run_dir(config_path: Path) -> Path:
    return runs_dir(config_path) / f"{config_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_run_dir(config_path: Path, sets: list[str]) -> Path:
    """The newest run that this config file made and that has the exported `sets` training
    needs: stats.json records the config's path and content hash (never a match by name:
    `sft.yaml` must not take a run of `sft_v2.yaml`). A run of the file as it is now wins; else
    the newest run of an earlier version of it (the train section was edited, say), with a
    warning. Without one, the error names what the newest run of the config lacks."""
    from curation.core.stats import RunStats, config_sha256, unwritten_sets

    path, digest = config_path.resolve(), config_sha256(config_path)
    runs: list[Path] = []
    older: list[Path] = []
    lacking: list[Path] = []
    for stats_file in runs_dir(config_path).glob("*/stats.json"):
        run_dir = stats_file.parent
        try:
            stats = RunStats.read(run_dir)
        except ValueError:  # a half-written or foreign stats.json
            continue
        if stats.config is None or Path(stats.config).resolve() != path or (run_dir / INTERRUPTED).exists():
            continue
        if unwritten_sets(run_dir, sets):
            lacking.append(run_dir)
            continue
        (runs if stats.config_sha256 == digest else older).append(run_dir)
    def newest(dirs: list[Path]) -> Path:
        return max(dirs, key=lambda p: (p / "stats.json").stat().st_mtime)

    if runs:
        return newest(runs)
    if older:
        chosen = newest(older)
        print(f"curate: warning: {config_path} changed since it curated {chosen}; training on that run", file=sys.stderr)
        return chosen
    if lacking:
        last = newest(lacking)
        why = "; ".join(f"export/hf/{kind}: {reason}" for kind, reason in unwritten_sets(last, sets).items())
        raise ConfigError(f"no run of {config_path} has the sets train.method needs; the newest, {last}, lacks ({why})")
    raise ConfigError(f"no curated run of {config_path} under {runs_dir(config_path)}: pass --data RUN_DIR")


def expand_out_dir(pattern: str, stamp: Callable[[], str]) -> Path:
    """`{time}` in an output directory becomes `stamp()` (the flow's: the run's scheduled start time, local time), and
    the folder is claimed there and then: runs of a schedule that start in the same second (late
    runs caught up together) each get their own, the later ones as `<name>-2`, `<name>-3`, ..."""
    if "{time}" not in pattern:
        return Path(pattern)
    first = claimed = Path(pattern.replace("{time}", stamp()))
    taken = 1
    while True:
        try:
            claimed.mkdir(parents=True)
            return claimed
        except FileExistsError:
            taken += 1
            claimed = first.with_name(f"{first.name}-{taken}")


@contextmanager
def run_folder(out_dir: str, stamp: Callable[[], str]) -> Iterator[tuple[Path, RunMirror | None]]:
    """The folder a run works in, and the mirror of a URL: OUT_DIR (its `{time}` claimed), or a
    URL's local staging folder that the mirror keeps the URL up to date with. Afterwards, however
    the run ended: the run's own new folder removed if it stayed empty (a served tick that found
    nothing to do), the run files pushed to the URL (also of a failed or interrupted run)."""
    mirror = RunMirror.of(out_dir.replace("{time}", stamp()) if "{time}" in out_dir else out_dir) if is_remote(out_dir) else None
    out = mirror.local if mirror else expand_out_dir(out_dir, stamp)
    claimed = out if "{time}" in out_dir and not mirror else None  # this run's own new folder
    try:
        yield out, mirror
    finally:
        if claimed is not None and claimed.is_dir() and not any(claimed.iterdir()):
            claimed.rmdir()
        if mirror is not None and mirror.started:
            with ending.writing(mirror.url):
                mirror.push_run()
