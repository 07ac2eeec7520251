"""One curate run, end to end, without Prefect: the plan into the run directory, then what is done
with it: the kept-count check, validation, publishing (publish.json says the version) and the report.

Every unit of work is a `Call` through the one `around` hook (curation/core/run.py): the curate
flow (flows/curate.py) runs each as a Prefect task, a caller without one runs them in turn. A
refresh (`publish:`) holds its publish dir's lock from reading the latest version to publishing the
next, and curates only the inputs that version has not consumed. Never publishes after a signal
(the hook checks for one before every call); the report is written after a failed validation too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.core import ending
from curation.core.mirror import RunMirror
from curation.core.preflight import preflight
from curation.core.run import Around, Call, CurationRun
from curation.core.stats import RunFailed, RunStats, check_kept
from curation.core.storage import RemotePath, as_path
from curation.publish.inputs import refresh_inputs
from curation.publish.lock import publish_lock
from curation.publish.versions import Version, load_version, publish
from curation.report.html import write_report
from curation.report.validate import ValidationFailed, enforce, validate_run
from schemas.config import CurateConfig

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """`stats`: None when a refresh found no new inputs (nothing ran). `failure`: too few records
    kept, or a `fail` suite failed: found after the run files, raised by the caller after the report."""

    stats: RunStats | None
    failure: RunFailed | ValidationFailed | None = None


def curate(
    config: CurateConfig,
    config_path: str | Path,
    out: Path,
    around: Around | None = None,
    say: Callable[[str], Any] = log.info,
    progress: bool = False,
    fresh: bool = False,
    mirror: RunMirror | None = None,
) -> Outcome:
    """Curate `config` into `out` (the staging folder of `mirror` for a URL), then validate,
    publish and report as configured. Raises ConfigError before any work (a scheduled run's
    checks start here), RunFailed when an input file is mostly rejected at ingest."""
    run_call = around or (lambda call: call.run())
    with ExitStack() as held:
        previous = None
        preflight(config, out)
        if config.publish:
            held.enter_context(publish_lock(config.publish.dir, wait=config.publish.lock == "wait"))
            previous = load_version(config.publish.dir)  # a dir with versions but no LATEST: ConfigError
            config.inputs = refresh_inputs(config.publish.dir, config.inputs)
            if not config.inputs:
                say(f"no new inputs since version {previous.number if previous else '-'}: nothing to publish")
                return Outcome(None)
        (out / ending.INTERRUPTED).unlink(missing_ok=True)  # a rerun into an interrupted run resumes it
        if mirror is not None:
            (mirror.url / ending.INTERRUPTED).unlink(missing_ok=True)
        run = CurationRun(config, out, progress, previous, mirror=mirror)
        stats = run.execute(config_path, fresh, run_call, say=say)
        say(f"kept {stats.totals.kept} of {stats.totals.ingested}; rejects in {out}/rejected.parquet")
        failure: RunFailed | ValidationFailed | None = None
        try:
            check_kept(stats, config.execution)
        except RunFailed as exc:  # the report is still written: it shows where the records went
            failure = exc
        if (validation := config.validation) and failure is None:
            summary = run_call(Call("validate", lambda: validate_run(out, validation)))
            say("validation: " + ", ".join(f"{s['name']} {'passed' if s['success'] else 'FAILED'}" for s in summary["suites"]))
            try:
                enforce(summary)
            except ValidationFailed as exc:
                failure = exc
        if config.publish and failure is None:
            say(f"published {run_call(Call('publish', lambda: publish_run(config, out, previous)))}")
        say(f"report: {run_call(Call('report', lambda: write_report(out)))}")  # also after a failed validation
        return Outcome(stats, failure)


def publish_run(config: CurateConfig, out: Path, previous: Version | None) -> Path | RemotePath:
    """The run's kept records as the publish dir's next version; publish.json in the run
    directory says which version it became and what changed (the report shows it)."""
    assert config.publish is not None
    ending.check()  # never publish after a signal, whoever runs this call
    with ending.writing(config.publish.dir):  # the version being assembled is removed; LATEST stays
        version = publish(config.publish.dir, out, config, previous, inputs=[as_path(s.path) for s in config.inputs])
    ending.note_published(version)
    diff = json.loads((version / "diff.json").read_text())
    with ending.writing(out):
        (out / "publish.json").write_text(json.dumps({"version_dir": str(version), **diff}, indent=2) + "\n")
    return version
