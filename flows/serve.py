"""`curate serve`: a deployment of the curate flow on a schedule, served by this process."""

from __future__ import annotations

from pathlib import Path

from flows.artifacts import slug
from flows.curate import curate_flow


def serve_curate(
    config_path: Path, cron: str | None = None, interval: float | None = None, runs: Path = Path("runs"), name: str | None = None
) -> None:
    """Serve deployment `curate/<config stem>` until interrupted; each run writes a new run directory.

    The parameters are absolute (the config, and `RUNS/<stem>-{time}`: the flow fills in its
    start time), so runs do not depend on the directory the server happens to run in.
    """
    stem = config_path.stem
    curate_flow.serve(
        name=name or slug(stem),
        cron=cron,
        interval=interval,
        parameters={
            "config_path": str(config_path.resolve()),
            "out_dir": str(runs.resolve() / f"{stem}-{{time}}"),
            "progress": False,
        },
        description=f"curate {config_path.name} on a schedule; each run writes {runs}/{stem}-<time>/",
        tags=["curate"],
    )
