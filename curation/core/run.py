"""Running the plan: ingest, every planned step with its checkpoint, then the run directory.

`run_pipeline(config, out)` does it in this process (tests, benchmarks, scripts). The curate
flow (flows/curate.py) runs the very same steps, each wrapped in a Prefect task: `run_ingest`,
`run_stage` and `run_expansion` are the task bodies, and `CurationRun` walks the plan, chaining
the checkpoint fingerprints and keeping the ledger.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curation.core.checkpoint import Checkpoint, digest, input_fingerprint, scratch_dir, stage_fingerprint
from curation.core.corpus import Corpus, Source, append, write_parquet
from curation.core.plan import Expansion, Step, build_plan
from curation.core.stage import Stage, StageResult
from curation.core.stats import (
    Invariant,
    RunStats,
    StageStats,
    Totals,
    check_ingest,
    check_kept,
    config_sha256,
    stage_stats,
)
from curation.ingest import IngestResult, ingest
from curation.publish.versions import Version
from schemas.config import CurateConfig
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA

log = logging.getLogger(__name__)
Around = Callable[[str, Callable[[], Any]], Any]  # (step name, the step's call) -> its result


class InvariantError(RuntimeError):
    """ingested + generated != kept + rejected: a row was lost or invented. Never tolerated."""


@dataclass
class RunLedger:
    """Everything a run has decided so far: the live records, all rejects, per-stage stats."""

    records: Source
    rejects: list[Source] = field(default_factory=list)
    stages: list[StageStats] = field(default_factory=list)
    ingested: int = 0
    generated: int = 0  # records added by synthesis and preference
    started: float = field(default_factory=time.time)

    @classmethod
    def from_ingest(cls, result: IngestResult) -> RunLedger:
        ingested = result.records.height + result.rejected.height
        return cls(records=result.records, rejects=[result.rejected], stages=[result.stats()], ingested=ingested)

    def record(self, stats: StageStats, kept: Source, rejected: Source | None) -> None:
        self.records = kept
        if rejected is not None:
            self.rejects.append(rejected)
        self.stages.append(stats)

    def extend(self, name: str, rows_in: int, added: pl.DataFrame, figures: dict) -> None:
        self.records = append(self.records, added)
        self.generated += added.height
        self.stages.append(stage_stats(name, rows_in, self.records.height, {}, figures.get("seconds"), figures))

    def apply(self, stage: Stage) -> StageResult:
        """Run a stage on the live records, in memory, without a checkpoint."""
        rows_in = self.records.height
        result = stage(self.records)
        self.record(result.stats(stage.name, rows_in), result.kept, result.rejected)
        return result


def scrubbed(rejects: Source, scrub: Callable[[pl.DataFrame], pl.DataFrame]) -> Source:
    """Rejects rewritten through a scrubbing step (PII), shard by shard for a corpus."""
    if isinstance(rejects, pl.DataFrame):
        return scrub(rejects)
    writer = rejects.derive(REJECT_SCHEMA)
    for frame in rejects.frames():
        writer.write(scrub(frame))
    return writer.close()


def write_run(out_dir: Path, ledger: RunLedger, config_path: Path | str | None) -> RunStats:
    """Write kept.parquet, rejected.parquet and stats.json; check ingested + generated == kept +
    rejected. Corpora are streamed into the two files, never collected."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = write_parquet([ledger.records], out_dir / "kept.parquet", RECORD_SCHEMA)
    rejected = write_parquet(ledger.rejects, out_dir / "rejected.parquet", REJECT_SCHEMA)
    accounted, expected = kept + rejected, ledger.ingested + ledger.generated
    stats = RunStats(
        config=str(Path(config_path).resolve()) if config_path is not None else None,
        config_sha256=config_sha256(config_path) if config_path is not None else None,
        stages=ledger.stages,
        totals=Totals(ingested=ledger.ingested, generated=ledger.generated, kept=kept, rejected=rejected,
                      removed_by_stage={s.stage: s.removed for s in ledger.stages}),
        invariant=Invariant(holds=accounted == expected),
        seconds=round(time.time() - ledger.started, 3),
    )
    stats.write(out_dir)
    if accounted != expected:
        raise InvariantError(
            f"{ledger.ingested} records ingested + {ledger.generated} generated but {kept} kept + {rejected} rejected"
        )
    return stats


# Run-directory outputs and the config section that writes each: a rerun into the same RUN_DIR
# without that section removes it, so no stale export is trained on or shown in the report.
SECTION_OUTPUTS = {"synthesis": "synthesis", "decontamination": "decontamination", "jury": "jury",
                   "export": "export", "validation": "validation", "publish.json": "publish"}


def remove_stale_outputs(out: Path, config: CurateConfig) -> list[str]:
    """Remove what an earlier run in `out` wrote for a section this config does not have."""
    removed = []
    for name, section in SECTION_OUTPUTS.items():
        target = out / name
        if getattr(config, section) is None and target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
            removed.append(name)
    if removed:
        log.info("removed stale outputs of sections no longer configured: %s", ", ".join(removed))
    return removed


# --- the steps, with their checkpoints (the flow's task bodies) ---------------------------------


def run_ingest(config: CurateConfig, progress: bool, checkpoint: Checkpoint, fresh: bool = False) -> dict:
    if (manifest := restored(checkpoint, fresh)) is not None:
        return manifest
    work = checkpoint.scratch / "ingest"
    result = ingest(config.inputs, progress=progress, out=work, batch_size=config.execution.batch_size, base=config.base_dir)
    manifest = checkpoint.save(result.records, result.rejected, result.stats())
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def run_stage(stage: Stage, records: Corpus, checkpoint: Checkpoint, fresh: bool = False) -> dict:
    if (manifest := restored(checkpoint, fresh)) is not None:
        return manifest
    result = stage(records)
    return checkpoint.save(result.kept, result.rejected, result.stats(stage.name, records.height))


def run_expansion(step: Expansion, records: Corpus, checkpoint: Checkpoint, fresh: bool = False) -> dict:
    if (manifest := restored(checkpoint, fresh)) is not None:
        return manifest
    start = time.perf_counter()
    added, figures = step(records)
    figures["seconds"] = round(time.perf_counter() - start, 3)
    return checkpoint.save(added, None, figures)


def restored(checkpoint: Checkpoint, fresh: bool) -> dict | None:
    """The manifest of a complete checkpoint for this key (unless `fresh`): the step is done."""
    manifest = None if fresh else checkpoint.manifest()
    if manifest is not None:
        log.info("%s: restored from %s", checkpoint.stage, checkpoint.dir)
    return manifest


@dataclass
class CurationRun:
    """One run of the plan into `out`: the ingest checkpoint, then each step's checkpoint keyed
    by a fingerprint chained from the one before, and the ledger the checkpoints fill."""

    config: CurateConfig
    out: Path
    progress: bool = True
    previous: Version | None = None  # a refresh: the published version new records are deduped against
    ledger: RunLedger | None = None

    def __post_init__(self) -> None:
        shutil.rmtree(scratch_dir(self.out), ignore_errors=True)  # a killed run's half-written corpora
        remove_stale_outputs(self.out, self.config)
        published = str(self.previous.number) if self.previous else ""  # the version is an input too
        self.ingest_checkpoint = Checkpoint(
            self.out, 0, "ingest", digest(input_fingerprint(self.config), published), self.config.execution.batch_size
        )
        self.checkpoints = [self.ingest_checkpoint]  # absorbed so far

    def start(self) -> RunLedger:
        """The ledger from the ingest checkpoint (after its step ran)."""
        records, rejected, stats = self.ingest_checkpoint.load()
        self.ledger = RunLedger(records=records, rejects=[rejected] if rejected is not None else [],
                                stages=[StageStats.model_validate(stats)], ingested=records.height + rejected.height)
        check_ingest(self.ledger.stages[0], self.config.execution)
        return self.ledger

    def steps(self) -> Iterator[tuple[Step, Checkpoint]]:
        """Each planned step with its checkpoint; `absorb` each before asking for the next."""
        assert self.ledger is not None, "start() first"
        key = self.ingest_checkpoint.key
        plan = build_plan(self.config, self.out, self.progress, self.previous, run_stats=self.ledger.stages)
        for index, step in enumerate(plan, start=1):
            key = stage_fingerprint(key, step.name, step.sections, self.config, step.files)
            yield step, Checkpoint(self.out, index, step.name, key, self.config.execution.batch_size, step.side_output)

    def absorb(self, step: Step, checkpoint: Checkpoint) -> StageStats:
        """Take a finished step's checkpoint into the ledger; its stats."""
        assert self.ledger is not None
        rows_in = self.ledger.records.height
        records, rejected, stats = checkpoint.load()
        if step.scrub is not None:
            self.ledger.rejects = [scrubbed(r, step.scrub) for r in self.ledger.rejects]
            for earlier in self.checkpoints:
                earlier.discard()
        self.checkpoints.append(checkpoint)
        if step.adds_records:
            self.ledger.extend(step.name, rows_in, records.collect(), stats)
        else:
            self.ledger.record(StageStats.model_validate(stats), records, rejected)
        return self.ledger.stages[-1]

    def finish(self, config_path: Path | str | None) -> RunStats:
        assert self.ledger is not None
        stats = write_run(self.out, self.ledger, config_path)
        self.clean()
        return stats

    def clean(self) -> None:
        """Drop the scratch corpora (after the run files are written)."""
        shutil.rmtree(scratch_dir(self.out), ignore_errors=True)


def run_pipeline(
    config: CurateConfig,
    out: Path,
    config_path: Path | str | None = None,
    progress: bool = False,
    fresh: bool = False,
    previous: Version | None = None,
    in_memory: bool = False,
    around: Around | None = None,
) -> RunStats:
    """Curate into `out` in this process: ingest, every planned step, kept/rejected/stats.json.
    Validation, publishing and the report are the flow's. RunFailed after ingest when an input
    file is mostly rejected, and after writing the run files when too few records are kept.

    Streamed by default, as `curate run` does: parquet shards of `execution.batch_size` records,
    each step checkpointed (a re-run resumes). `in_memory`: the corpus as one frame, no
    checkpoints (the baseline the streamed path is checked and measured against). `around(name,
    call)` runs each step's call (ingest, every planned step, "write_run"): benchmarks measure
    there."""
    out = Path(out)
    around = around or (lambda name, call: call())
    if in_memory:
        remove_stale_outputs(out, config)
        ledger = RunLedger.from_ingest(around("ingest", lambda: ingest(config.inputs, progress=progress, base=config.base_dir)))
        check_ingest(ledger.stages[0], config.execution)
        for step in build_plan(config, out, progress, previous, run_stats=ledger.stages):
            if isinstance(step.runner, Expansion):
                rows_in, start = ledger.records.height, time.perf_counter()
                added, figures = around(step.name, lambda runner=step.runner: runner(ledger.records))
                ledger.extend(step.name, rows_in, added, {**figures, "seconds": round(time.perf_counter() - start, 3)})
            else:
                if step.scrub is not None:
                    ledger.rejects = [scrubbed(r, step.scrub) for r in ledger.rejects]
                around(step.name, lambda runner=step.runner: ledger.apply(runner))
        stats = around("write_run", lambda: write_run(out, ledger, config_path))
        check_kept(stats, config.execution)
        return stats
    run = CurationRun(config, out, progress, previous)
    around("ingest", lambda: run_ingest(config, progress, run.ingest_checkpoint, fresh))
    log.info(run.start().stages[-1].summary())
    for step, checkpoint in run.steps():
        records = run.ledger.records  # type: ignore[union-attr]
        if isinstance(step.runner, Expansion):
            around(step.name, lambda s=step.runner, c=checkpoint, r=records: run_expansion(s, r, c, fresh))
        else:
            around(step.name, lambda s=step.runner, c=checkpoint, r=records: run_stage(s, r, c, fresh))
        log.info(run.absorb(step, checkpoint).summary())
    stats = around("write_run", lambda: run.finish(config_path))
    check_kept(stats, config.execution)
    return stats
