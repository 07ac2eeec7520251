"""The curate flow: a curate run (curation/curate.py: the plan, then validation, publishing and
the report), one Prefect task per call.

The steps and their checkpoints are the core's (curation/core/run.py): each task calls the same
plain function `run_pipeline` calls, so a re-run into the same RUN_DIR skips finished stages
(Cached in the UI). Then the artifacts (flows/artifacts.py, read from the run dir).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run as flow_run_info
from prefect.states import Cancelled, Failed, State

import curation.jury.panel as jury_panel  # the module, not its ContextVar: `serve` pickles these tasks
from curation.core import ending
from curation.core.checkpoint import CHECKPOINTS, Checkpoint
from curation.core.inputs import load_config
from curation.core.run import Around, Call
from curation.core.rundirs import run_folder
from curation.core.stats import RunFailed
from curation.curate import curate
from flows import lifecycle
from flows.artifacts import key, progress_shown, publish_run
from schemas.base import ConfigError, StageFailed


def _cache_key(context: object, parameters: dict) -> str:
    checkpoint: Checkpoint = parameters["checkpoint"]
    return f"{checkpoint.index:02d}-{checkpoint.stage}-{checkpoint.key}"


# Cached by fingerprint (never by hashing DataFrames); the task's result is the small manifest,
# persisted as JSON next to the checkpoints, so a finished stage shows as Cached in the UI.
CACHED = {"cache_key_fn": _cache_key, "persist_result": True, "result_serializer": "json"}


def _options(checkpoint: Checkpoint, fresh: bool) -> dict:
    return {
        "name": checkpoint.stage,
        "result_storage": checkpoint.run_dir / CHECKPOINTS / ".prefect",
        # A stale or incomplete checkpoint (or --fresh) must not be answered from Prefect's cache.
        "refresh_cache": fresh or checkpoint.manifest() is None,
    }


# One task per step of the run (curation/core/run.py's `Call`): its body is the core's own call, so
# a complete checkpoint whose Prefect cache record is missing (killed in between) is restored by
# the step function itself. Reads and LLM steps retry once (answers come back from the cache).
@task(**CACHED)
def step_task(call: Call, checkpoint: Checkpoint, progress_key: str | None = None) -> dict | Failed:
    with progress_shown(jury_panel.JURY_PROGRESS, progress_key, "jury ratings"):
        try:
            with ending.writing(checkpoint.run_dir):
                return call.run()
        except StageFailed as exc:
            return _stopped(exc)


def _stopped(exc: Exception) -> Failed:
    """A stage that could not do its job, or a run that cannot go on: the task or flow ends Failed
    with its message, without a traceback and without a retry (the cause is outside; the rerun
    resumes from the cache)."""
    get_run_logger().error(str(exc))
    return Failed(message=str(exc), data=exc)


@task(cache_policy=NO_CACHE)
def call_task(call: Call, out_dir: Path) -> Any:
    """A call without a checkpoint: the run files, validation, publishing, the report; named by
    the call (write-run, validate, publish, report)."""
    try:
        with ending.writing(out_dir):
            return call.run()
    except StageFailed as exc:
        return _stopped(exc)


@task(name="artifacts", cache_policy=NO_CACHE)
def artifacts_task(out_dir: Path, config_stem: str) -> list[str]:
    return publish_run(out_dir, config_stem)


def _stamp() -> str:
    return flow_run_info.scheduled_start_time.astimezone().strftime("%Y%m%d-%H%M%S")


def _done(state: State):
    """A task's result; a stage that could not do its job (a StageFailed returned as a Failed
    state, no traceback) raises it, for the flow to stop with."""
    if state.is_failed() and isinstance(error := state.result(raise_on_failure=False), StageFailed):
        raise error
    return state.result()  # any other failure raises here, as it would from the task call


def _around(out: Path, fresh: bool, stem: str, steps: list[str]) -> Around:
    """Each call of the run as a Prefect task (`steps` collects the names of the finished ones, for
    INTERRUPTED); a stage that stopped ends the run here (nothing after it runs, no run
    directory, no publishing)."""

    def around(call: Call) -> Any:
        ending.check()
        if call.checkpoint is None:
            options = {"name": call.name.replace("_", "-"), "retries": int(call.retry), "retry_delay_seconds": 2}
            state = call_task.with_options(**options)(call, out, return_state=True)
        else:
            options = {**_options(call.checkpoint, fresh), "retries": int(call.retry), "retry_delay_seconds": 5}
            progress_key = key(stem, "jury_progress") if call.name == "jury" else None
            state = step_task.with_options(**options)(call, call.checkpoint, progress_key, return_state=True)
        result = _done(state)
        steps.append(call.name)
        return result

    return around


@flow(name="curate", log_prints=False)
def curate_flow(config_path: str, out_dir: str, progress: bool = True, fresh: bool = False) -> dict | Failed:
    """A curate run (curation/curate.py: ingest, the planned steps: curation/core/sections.py,
    pii -> ... -> export, the run directory, validation, publishing, the report), then its artifacts.

    Each stage's output is checkpointed under OUT_DIR/.checkpoints/ with a fingerprint of its
    inputs and config section: re-running into the same OUT_DIR skips finished stages (their
    tasks show as Cached) unless `fresh`. SIGINT / SIGTERM stop it before the next step and
    before publishing (curation/core/ending.py); the run directory is left marked INTERRUPTED.
    """
    logger = get_run_logger()
    lifecycle.quiet_expected_tracebacks()  # also in a served run's own process
    config, stem = load_config(config_path), Path(config_path).stem
    steps: list[str] = []
    with run_folder(out_dir, _stamp) as (out, mirror):
        try:
            with ending.interruptible(), ending.writing(out):
                outcome = curate(config, config_path, out, _around(out, fresh, stem, steps), logger.info, progress, fresh, mirror)
                if outcome.stats is None:  # a refresh with no new inputs
                    return {"stages": [], "totals": {"ingested": 0, "generated": 0, "kept": 0, "rejected": 0}, "seconds": 0.0}
                artifacts_task(out, stem)
        except (ConfigError, RunFailed) as exc:  # found before any work; an input mostly rejected
            return _stopped(exc)
        except StageFailed as exc:  # logged where it was raised
            return Failed(message=str(exc), data=exc)
        except (KeyboardInterrupt, TerminationSignal) as exc:  # a signal: ours, or Prefect's for SIGTERM
            message = ending.mark_interrupted(out, ending.interrupted_by(exc), steps[-1] if steps else None)
            logger.warning(message)
            return Cancelled(message=message)
    if outcome.failure is not None:  # a failed state carrying the error: the run stops, named, without a traceback
        return _stopped(outcome.failure)
    return outcome.stats.model_dump(mode="json", by_alias=True)
