"""`curate serve`: a deployment of the curate flow on a schedule, served by this process."""

from __future__ import annotations

from pathlib import Path

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from flows.artifacts import slug
from flows.curate import curate_flow

# One run at a time. A tick while a run is still going is cancelled by the server before any
# process starts (CANCEL_NEW), not queued: a refresh that outlasts its interval must not pile up
# runs behind it (they would only wait on the publish lock, or repeat work already being done).
MAX_RUNS = 1


def serve_curate(
    config_path: Path, cron: str | None = None, interval: float | None = None, runs: Path = Path("runs"), name: str | None = None
) -> None:
    """Serve deployment `curate/<config stem>` until interrupted; each run writes a new run directory.

    The parameters are absolute (the config, and `RUNS/<stem>-{time}`: the flow fills in its
    start time), so runs do not depend on the directory the server happens to run in.
    """
    stem = config_path.stem
    print(f"curate serve: at most {MAX_RUNS} run at a time; a tick while one runs is skipped (cancelled in Prefect)")
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
        global_limit=ConcurrencyLimitConfig(limit=MAX_RUNS, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
    )
