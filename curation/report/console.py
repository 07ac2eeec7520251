"""What the `curate` CLI says without Prefect: `curate validate` (the checks, and what each input
holds), `curate report` (the report rewritten), after a run its funnel and where the report is,
and the one line and exit code of each way a command ends that is no bug (`closing`).
The imports stay inside the commands: `curate --help` does not load the stages."""

from __future__ import annotations

import signal
from pathlib import Path

from curation.core import ending
from curation.core.inputs import load_config
from curation.core.sections import configured
from curation.llm.secrets import mask_secrets
from schemas.base import StageFailed
from schemas.config import ConfigError

EXIT_CONFIG = 2
EXIT_VALIDATION = 3
EXIT_STAGE = 4  # a stage could not do its job, an input mostly rejected, or fewer than execution.min_kept kept


def validate(config_path: Path) -> int:
    from curation.core.preflight import preflight
    from curation.core.stats import check_ingest_files
    from curation.ingest import SAMPLE_ROWS, check_inputs, skipped_files

    config = load_config(config_path)
    preflight(config)
    files = check_inputs(config.inputs, sample=True, base=config.base_dir)  # what each file holds, from a sample
    check_ingest_files([f.entry() for f in files], config.execution)  # the run's exit 4, found on the sample
    sections = configured(config)
    print(f"{config_path}: valid ({len(config.inputs)} inputs; sections: {', '.join(sections) or 'none'})")
    print(f"inputs (the first {SAMPLE_ROWS} rows of each file):")
    for report in files:
        print(f"  {report.line()}")
    for path in skipped_files(config.inputs, config.base_dir):
        print(f"  skipped (not a data file): {path}")
    return 0


def report(run_dir: Path) -> int:
    from curation.report.html import write_report

    if not (run_dir / "stats.json").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no stats.json)")
    print(write_report(run_dir))
    return 0


def print_report(run_dir: Path) -> None:
    if (run_dir / "report.html").is_file():  # a refresh with nothing new writes none
        print(f"report: {run_dir / 'report.html'}")


def funnel(result: dict, out: Path) -> str:
    from curation.core.stats import RunStats

    stats = RunStats.model_validate(result)
    if not stats.stages:
        return "no new inputs since the latest published version: nothing to curate or publish"
    lines = [f"{'stage':<16}{'in':>9}{'out':>9}{'removed':>9}  top reasons"]
    for s in stats.stages:
        lines.append(f"{s.stage:<16}{s.rows_in:>9}{s.out:>9}{s.removed:>9}  {s.reasons_text(3)}")
    for kind, exported in stats.exported_sets().items():
        counts = f"{exported.train} train, {exported.test} test"
        lines.append(f"export/hf/{kind}: {counts if exported.written else f'not written ({exported.not_written})'}")
    t = stats.totals
    lines.append(f"kept {t.kept} of {t.ingested} records in {stats.seconds:.1f} s -> {out}/")
    return "\n".join(lines)


def closing(exc: BaseException, command: str) -> tuple[str, int] | None:
    """The one line and exit code of a config error, a failed `fail` suite, a stage that stopped,
    a signal or a refused write (a Prefect API gone: flows/cli.py); None for anything else (a bug:
    its traceback is shown)."""
    from curation.report.validate import ValidationFailed

    if isinstance(exc, ConfigError):
        return f"curate: error: {mask_secrets(str(exc))}", EXIT_CONFIG
    if isinstance(exc, ValidationFailed):
        return f"curate: {exc}", EXIT_VALIDATION
    if isinstance(exc, StageFailed):
        return f"curate: stopped: {mask_secrets(str(exc))}", EXIT_STAGE
    if (signum := ending.received()) is not None:  # whatever the signal became on its way up
        what = ": stopped serving" if command == "serve" else ending.published_note()  # served runs say their own
        return f"curate: interrupted by {signal.Signals(signum).name}{what}", 128 + signum
    if (refusal := ending.disk_refusal(exc)) is not None:
        return f"curate: stopped: cannot write: {refusal}", EXIT_STAGE
    return None
