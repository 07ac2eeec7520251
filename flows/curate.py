"""The curate flow: one Prefect task per pipeline stage, calling the plain stage functions."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from curation.export import export_run
from curation.ingest import IngestResult, ingest
from curation.models import load_tokenizer
from curation.pipeline import Expansion, RunLedger, build_stages, write_run
from curation.stage import Stage, StageResult
from curation.report import write_report
from curation.validate import ValidationFailed, enforce, validate_run
from schemas.config import CurateConfig, load_config
from schemas.export import ExportConfig
from schemas.validation import ValidationConfig


# Stage inputs are DataFrames: hashing them for a cache key would cost more than the stage.
@task(name="ingest", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def ingest_task(config: CurateConfig, progress: bool) -> IngestResult:
    return ingest(config.inputs, progress=progress)


@task(cache_policy=NO_CACHE)
def stage_task(stage: Stage, records: pl.DataFrame) -> StageResult:
    return stage(records)


# LLM steps retry cheaply: every answer already received comes back from the answer cache.
@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def expansion_task(step: Expansion, records: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    return step.run(records)


@task(name="write-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def write_task(out_dir: Path, ledger: RunLedger, config_path: Path) -> dict:
    return write_run(out_dir, ledger, config_path)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(out_dir: Path, cfg: ValidationConfig) -> dict:
    return validate_run(out_dir, cfg)


@task(name="report", cache_policy=NO_CACHE)
def report_task(out_dir: Path) -> Path:
    return write_report(out_dir)


def export_stage(cfg: ExportConfig, out_dir: Path, ledger: RunLedger) -> Stage:
    """The export as the last stage: rows it cannot format correctly become rejects."""
    tokenizer = load_tokenizer(cfg.tokenizer)

    def run(records: pl.DataFrame) -> StageResult:
        # ledger.stages is read when export runs, so the dataset card sees every earlier stage.
        return export_run(records, cfg, out_dir, tokenizer, run_stats={"stages": ledger.stages})

    return Stage("export", run)


def _summary(name: str, stats: dict) -> str:
    reasons = ", ".join(f"{r} {n}" for r, n in stats["removed_by_reason"].items())
    added = f", {stats['generated']} generated" if stats.get("generated") else ""
    return f"{name}: {stats['in']} in, {stats['out']} out{added}" + (f" (removed: {reasons})" if reasons else "")


@flow(name="curate", log_prints=False)
def curate_flow(config_path: str, out_dir: str, progress: bool = True) -> dict | Failed:
    """Ingest -> synthesis -> filters -> dedup -> jury -> preference pairs -> export -> run directory."""
    logger = get_run_logger()
    config = load_config(config_path)
    ledger = RunLedger.from_ingest(ingest_task(config, progress))
    logger.info(_summary("ingest", ledger.stages[-1]))
    stages = build_stages(config, Path(out_dir), progress=progress)
    if config.export:
        stages.append(export_stage(config.export, Path(out_dir) / "export", ledger))
    for stage in stages:
        rows_in = ledger.records.height
        if isinstance(stage, Expansion):
            added, step_stats = expansion_task.with_options(name=stage.name)(stage, ledger.records)
            ledger.extend(stage.name, rows_in, added, step_stats)
        else:
            ledger.record(stage.name, rows_in, stage_task.with_options(name=stage.name)(stage, ledger.records))
        logger.info(_summary(stage.name, ledger.stages[-1]))
    stats = write_task(Path(out_dir), ledger, Path(config_path))
    totals = stats["totals"]
    logger.info(f"kept {totals['kept']} of {totals['ingested']}; rejects in {out_dir}/rejected.parquet")
    failure = None
    if config.validation:
        summary = validate_task(Path(out_dir), config.validation)
        logger.info("validation: " + ", ".join(f"{s['name']} {'passed' if s['success'] else 'FAILED'}" for s in summary["suites"]))
        try:
            enforce(summary)
        except ValidationFailed as exc:
            failure = exc
    report = report_task(Path(out_dir))  # also after a failed validation: it shows what failed
    logger.info(f"report: {report}")
    if failure is not None:
        # A failed state carrying the error, not a raise: the run stops, named, without a traceback.
        logger.error(str(failure))
        return Failed(message=str(failure), data=failure)
    return stats
