"""`curate serve`: a deployment of the curate flow on a schedule, served by this process."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from prefect.client.orchestration import get_client
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
    """Serve deployment `curate/<config stem>` until interrupted (then pause its schedule); each run
    writes a new run directory. The parameters are absolute (the config, and `RUNS/<stem>-{time}`: the
    flow fills in its start time), so runs do not depend on the directory the server happens to run in."""
    stem, name = config_path.stem, name or slug(config_path.stem)
    print(f"curate serve: at most {MAX_RUNS} run at a time; a tick while one runs is skipped (cancelled in Prefect)")
    try:
        curate_flow.serve(
            name=name, cron=cron, interval=interval, tags=["curate"],
            parameters={"config_path": str(config_path.resolve()), "out_dir": str(runs.resolve() / f"{stem}-{{time}}"),
                        "progress": False},
            description=f"curate {config_path.name} on a schedule; each run writes {runs}/{stem}-<time>/",
            global_limit=ConcurrencyLimitConfig(limit=MAX_RUNS, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        )
    except KeyboardInterrupt:  # the signal that stops serving, raised here or (next) caught by Prefect
        pause_schedule(f"{curate_flow.name}/{name}")
        raise
    pause_schedule(f"{curate_flow.name}/{name}")


def pause_schedule(deployment: str) -> None:
    # Prefect's runner starts to on shutdown, but the signal cancels that midway: the schedule stayed active,
    # booking runs no process starts (Late in the UI; a 1 s interval kept the server's SQLite database busy).
    with suppress(Exception), get_client(sync_client=True) as client:
        client.pause_deployment(client.read_deployment_by_name(deployment).id)
