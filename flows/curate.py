"""The curate flow: the pipeline plan (curation/core/plan.py), one Prefect task per step.

The steps and their checkpoints are the core's (curation/core/run.py): each task calls the same
plain function `run_pipeline` calls, so a re-run into the same RUN_DIR skips finished stages
(Cached in the UI). After the run directory: validation, publishing, the report and the
artifacts (flows/artifacts.py, read from the run dir).
"""

from __future__ import annotations

import json
import signal
from contextlib import ExitStack
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
from curation.core.mirror import RunMirror
from curation.core.preflight import preflight
from curation.core.run import Call, CurationRun
from curation.core.rundirs import expand_out_dir
from curation.core.stats import RunFailed, RunStats, check_kept
from curation.core.storage import as_path, is_remote
from curation.publish.inputs import refresh_inputs
from curation.publish.lock import publish_lock
from curation.publish.versions import Version, load_version, publish
from curation.report.html import write_report
from curation.report.validate import ValidationFailed, enforce, validate_run
from flows import lifecycle
from flows.artifacts import ProgressArtifact, keys, publish_run
from schemas.base import ConfigError, StageFailed
from schemas.config import CurateConfig
from schemas.validation import ValidationConfig


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
    token = jury_panel.JURY_PROGRESS.set(ProgressArtifact(progress_key, "jury ratings")) if progress_key else None
    try:
        with ending.writing(checkpoint.run_dir):
            return call.run()
    except StageFailed as exc:
        return _stopped(exc)
    finally:
        if token is not None:
            jury_panel.JURY_PROGRESS.reset(token)


def _stopped(exc: StageFailed) -> Failed:
    """A stage that could not do its job: the task ends Failed with its message, without a
    traceback and without a retry (the cause is outside; the rerun resumes from the cache)."""
    get_run_logger().error(str(exc))
    return Failed(message=str(exc), data=exc)


@task(name="write-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def write_task(call: Call, out_dir: Path) -> RunStats | Failed:
    try:
        with ending.writing(out_dir):
            return call.run()
    except StageFailed as exc:
        return _stopped(exc)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(config: CurateConfig, out_dir: Path, previous: Version | None) -> Path | Failed:
    try:
        with ending.writing(config.publish.dir):  # the version being assembled is removed; LATEST stays
            version = publish(config.publish.dir, out_dir, config, previous, inputs=[as_path(s.path) for s in config.inputs])
        ending.note_published(version)
        # The run directory says which version it became and what changed (the report shows it).
        diff = json.loads((version / "diff.json").read_text())
        with ending.writing(out_dir):
            (out_dir / "publish.json").write_text(json.dumps({"version_dir": str(version), **diff}, indent=2) + "\n")
    except StageFailed as exc:
        return _stopped(exc)
    return version


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(out_dir: Path, cfg: ValidationConfig) -> dict:
    return validate_run(out_dir, cfg)


@task(name="report", cache_policy=NO_CACHE)
def report_task(out_dir: Path) -> Path:
    return write_report(out_dir)


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


@flow(name="curate", log_prints=False)
def curate_flow(config_path: str, out_dir: str, progress: bool = True, fresh: bool = False) -> dict | Failed:
    """Ingest, the planned steps (curation/core/sections.py: pii -> ... -> export), the run directory.

    Each stage's output is checkpointed under OUT_DIR/.checkpoints/ with a fingerprint of its
    inputs and config section: re-running into the same OUT_DIR skips finished stages (their
    tasks show as Cached) unless `fresh`. SIGINT / SIGTERM stop it before the next step and
    before publishing (curation/core/ending.py); the run directory is left marked INTERRUPTED.
    """
    logger = get_run_logger()
    lifecycle.quiet_expected_tracebacks()  # also in a served run's own process
    config = load_config(config_path)
    # A URL: the run works in a local staging folder that the mirror keeps the URL up to date with.
    mirror = RunMirror.of(out_dir.replace("{time}", _stamp()) if "{time}" in out_dir else out_dir) if is_remote(out_dir) else None
    out = mirror.local if mirror else expand_out_dir(out_dir, _stamp)
    claimed = out if "{time}" in out_dir and not mirror else None  # this run's own new folder
    steps: list[str] = []
    try:
        with ending.interruptible(), ending.writing(out):
            return _curate(config, config_path, out, progress, fresh, steps, logger, mirror)
    except StageFailed as exc:  # logged where it was raised
        return Failed(message=str(exc), data=exc)
    except (KeyboardInterrupt, TerminationSignal) as exc:  # a signal: ours, or Prefect's for SIGTERM
        signum = ending.interrupted_by(exc)
        marked = ending.mark_interrupted(out, signum, steps[-1] if steps else None)
        message = f"interrupted by {signal.Signals(signum).name}{ending.published_note()}"
        message += f"; {out} is marked {ending.INTERRUPTED}" if marked else ""
        logger.warning(message)
        return Cancelled(message=message)
    finally:
        if claimed is not None and claimed.is_dir() and not any(claimed.iterdir()):
            claimed.rmdir()  # a served tick that found nothing to do leaves no empty folder
        if mirror is not None and mirror.started:  # the run files, also of a failed or interrupted run
            with ending.writing(mirror.url):
                mirror.push_run()


def _curate(
    config: CurateConfig, config_path: str, out: Path, progress: bool, fresh: bool, steps: list[str], logger: Any,
    mirror: RunMirror | None = None,
) -> dict | Failed:
    """The flow's work; `steps` collects the names of the finished steps (for INTERRUPTED)."""
    with ExitStack() as held:
        previous = None
        try:
            preflight(config, out)  # scheduled runs start here, not in the CLI
            if config.publish:  # a refresh holds its publish dir from reading the latest version to publishing the next
                held.enter_context(publish_lock(config.publish.dir, wait=config.publish.lock == "wait"))
                previous = load_version(config.publish.dir)  # a dir with versions but no LATEST: ConfigError
        except ConfigError as exc:
            logger.error(str(exc))
            return Failed(message=str(exc), data=exc)
        stem = Path(config_path).stem
        if config.publish:  # a refresh: only inputs the latest version has not consumed
            config.inputs = refresh_inputs(config.publish.dir, config.inputs)
            if not config.inputs:
                logger.info(f"no new inputs since version {previous.number if previous else '-'}: nothing to publish")
                return {"stages": [], "totals": {"ingested": 0, "generated": 0, "kept": 0, "rejected": 0}, "seconds": 0.0}
        (out / ending.INTERRUPTED).unlink(missing_ok=True)  # a rerun into an interrupted run resumes it
        if mirror is not None:
            (mirror.url / ending.INTERRUPTED).unlink(missing_ok=True)
        run = CurationRun(config, out, progress, previous, mirror=mirror)

        def around(call: Call) -> Any:
            """Each step of the run as a Prefect task; a stage that stopped ends the run here (nothing
            after it runs, no run directory, no publishing)."""
            ending.check()
            if call.checkpoint is None:
                state = write_task(call, out, return_state=True)
            else:
                options = {**_options(call.checkpoint, fresh), "retries": int(call.retry), "retry_delay_seconds": 5}
                progress_key = keys(stem)["jury_progress"] if call.name == "jury" else None
                state = step_task.with_options(**options)(call, call.checkpoint, progress_key, return_state=True)
            result = _done(state)
            steps.append(call.name)
            return result

        try:
            stats = run.execute(config_path, fresh, around, say=logger.info)
        except RunFailed as exc:  # an input mostly rejected: stop before any stage works on the rest
            return _stopped(exc)
        logger.info(f"kept {stats.totals.kept} of {stats.totals.ingested}; rejects in {out}/rejected.parquet")
        failure: Exception | None = None
        try:
            check_kept(stats, config.execution)
        except RunFailed as exc:  # the report is still written: it shows where the records went
            failure = exc
        if config.validation and failure is None:
            summary = validate_task(out, config.validation)
            results = (f"{s['name']} {'passed' if s['success'] else 'FAILED'}" for s in summary["suites"])
            logger.info("validation: " + ", ".join(results))
            try:
                enforce(summary)
            except ValidationFailed as exc:
                failure = exc
        if config.publish and failure is None:
            ending.check()  # never publish after a signal
            version = _done(publish_task(config, out, previous, return_state=True))
            logger.info(f"published {version}")
        report = report_task(out)  # also after a failed validation: it shows what failed
        logger.info(f"report: {report}")
        artifacts_task(out, stem)
        if failure is not None:
            # A failed state carrying the error, not a raise: the run stops, named, without a traceback.
            logger.error(str(failure))
            return Failed(message=str(failure), data=failure)
        return stats.model_dump(mode="json", by_alias=True)
