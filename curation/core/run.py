"""Running the plan: ingest, every planned step with its checkpoint, then the run directory.

One loop runs a plan, `CurationRun.execute`: it walks the plan, chains the checkpoint
fingerprints and keeps the ledger. `run_pipeline(config, out)` calls it in this process (tests,
benchmarks, scripts); a curate run (curation/curate.py) calls it with the flow's `around`
(flows/curate.py), which runs each step as a Prefect task. Whether outputs are checkpoints on disk or held in memory is a storage
choice of the run, not another loop.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from curation.core.checkpoint import (
    Checkpoint,
    HeldCheckpoint,
    digest,
    input_fingerprint,
    scratch_dir,
    stage_fingerprint,
)
from curation.core.corpus import Source, append, collect, write_parquet
from curation.core.mirror import RunMirror
from curation.core.plan import Expansion, PlanContext, Step, build_plan, ingest_inputs, planned
from curation.core.sections import sections
from curation.core.stage import Stage
from curation.core.stats import (
    STANDARD,
    Invariant,
    RunStats,
    StageStats,
    Totals,
    check_ingest,
    check_kept,
    config_sha256,
    stage_stats,
)
from curation.core.storage import RemotePath
from schemas.config import CurateConfig
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA

if TYPE_CHECKING:
    from curation.publish.versions import Version

log = logging.getLogger(__name__)
Held = Checkpoint | HeldCheckpoint  # where a step's output is kept: on disk (resumable) or in memory


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

    def record(self, stats: StageStats, kept: Source, rejected: Source | None) -> None:
        self.records = kept
        if rejected is not None:
            self.rejects.append(rejected)
        self.stages.append(stats)

    def extend(self, name: str, rows_in: int, added: pl.DataFrame, manifest: dict) -> None:
        """`manifest`: the expansion's figures as its checkpoint keeps them, with its seconds."""
        self.records = append(self.records, added)
        self.generated += added.height
        figures = {k: v for k, v in manifest.items() if k not in STANDARD}
        self.stages.append(stage_stats(name, rows_in, self.records.height, {}, manifest.get("seconds"), figures))


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


def remove_stale_outputs(out: Path | RemotePath, config: CurateConfig) -> list[str]:
    """Remove what an earlier run in `out` wrote for a section this config does not have, so no
    stale export is trained on or shown in the report."""
    removed = []
    for section in sections():
        for name in section.outputs if not section.present(config) else ():
            target = out / name
            if not target.exists():
                continue
            if isinstance(target, RemotePath):
                target.rmtree()
            else:
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            removed.append(name)
    if removed:
        log.info("removed stale outputs of sections no longer configured: %s", ", ".join(removed))
    return removed


# --- the steps, with their checkpoints (the flow wraps each call in a Prefect task) -------------


def run_ingest(config: CurateConfig, progress: bool, checkpoint: Held, fresh: bool = False) -> dict:
    if (manifest := restored(checkpoint, fresh)) is not None:
        return manifest
    work = checkpoint.scratch / "ingest" if checkpoint.on_disk else None
    result = ingest_inputs(config, progress, work)
    manifest = checkpoint.save(result.records, result.rejected, result.stats())
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def run_stage(stage: Stage, records: Source, checkpoint: Held, fresh: bool = False) -> dict:
    if (manifest := restored(checkpoint, fresh)) is not None:
        return manifest
    result = stage(records)
    return checkpoint.save(result.kept, result.rejected, result.stats(stage.name, records.height))


def run_expansion(step: Expansion, records: Source, checkpoint: Held, fresh: bool = False) -> dict:
    if (manifest := restored(checkpoint, fresh)) is not None:
        return manifest
    start = time.perf_counter()
    added, figures = step(records)
    return checkpoint.save(added, None, {**figures.model_dump(mode="json"), "seconds": round(time.perf_counter() - start, 3)})


def restored(checkpoint: Held, fresh: bool) -> dict | None:
    """The manifest of a complete checkpoint for this key (unless `fresh`): the step is done."""
    if fresh or not checkpoint.on_disk:
        return None
    manifest = checkpoint.manifest()
    if manifest is not None:
        log.info("%s: restored from %s", checkpoint.stage, checkpoint.dir)
    return manifest


@dataclass(frozen=True)
class Call:
    """One unit of a run for `Around` to wrap: ingest, a planned step, or writing the run files.
    `checkpoint` is None for writing the run files; `retry`: worth retrying (reads, LLM calls)."""

    name: str
    run: Callable[[], Any]
    checkpoint: Held | None = None
    retry: bool = False


Around = Callable[[Call], Any]  # runs a Call, returns its result: the flow makes each a Prefect task


@dataclass
class CurationRun:
    """One run of the plan into `out`: the ingest checkpoint, then each step's checkpoint keyed
    by a fingerprint chained from the one before, and the ledger the checkpoints fill.
    `in_memory`: outputs held in this process instead of checkpoints on disk (nothing resumes).
    `mirror`: `out` is the staging folder of a run directory on object storage: the URL's
    checkpoints are pulled first and each finished one pushed (curation/core/mirror.py)."""

    config: CurateConfig
    out: Path
    progress: bool = True
    previous: Version | None = None  # a refresh: the published version new records are deduped against
    in_memory: bool = False
    ledger: RunLedger | None = None
    mirror: RunMirror | None = None

    def __post_init__(self) -> None:
        planned(PlanContext(self.config, self.out, previous=self.previous))  # the columns' check, before any work
        shutil.rmtree(scratch_dir(self.out), ignore_errors=True)  # a killed run's half-written corpora
        remove_stale_outputs(self.out, self.config)
        if self.mirror is not None:  # what another machine finished on this run is restored, not recomputed
            remove_stale_outputs(self.mirror.url, self.config)
            self.mirror.pull_checkpoints()
        published = str(self.previous.number) if self.previous else ""  # the version is an input too
        self.ingest_checkpoint = self._checkpoint(0, "ingest", digest(input_fingerprint(self.config), published), None)
        self.checkpoints: list[Held] = [self.ingest_checkpoint]  # absorbed so far

    def _checkpoint(self, index: int, stage: str, key: str, side_output: str | None) -> Held:
        if self.in_memory:
            return HeldCheckpoint(self.out, index, stage, key, side_output)
        return Checkpoint(self.out, index, stage, key, self.config.execution.batch_size, side_output)

    def start(self) -> RunLedger:
        """The ledger from the ingest checkpoint (after its step ran)."""
        records, rejected, stats = self.ingest_checkpoint.load()
        self.ledger = RunLedger(records=records, rejects=[rejected] if rejected is not None else [],
                                stages=[StageStats.model_validate(stats)],
                                ingested=records.height + (rejected.height if rejected is not None else 0))
        check_ingest(self.ledger.stages[0], self.config.execution)
        return self.ledger

    def steps(self) -> Iterator[tuple[Step, Held]]:
        """Each planned step with its checkpoint; `absorb` each before asking for the next."""
        assert self.ledger is not None, "start() first"
        key = self.ingest_checkpoint.key
        plan = build_plan(self.config, self.out, self.progress, self.previous, run_stats=self.ledger.stages)
        for index, step in enumerate(plan, start=1):
            key = stage_fingerprint(key, step.name, step.sections, self.config, step.files)
            yield step, self._checkpoint(index, step.name, key, step.side_output)

    def absorb(self, step: Step, checkpoint: Held) -> StageStats:
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
            self.ledger.extend(step.name, rows_in, collect(records), stats)
        else:
            self.ledger.record(StageStats.model_validate(stats), records, rejected)
        return self.ledger.stages[-1]

    def execute(self, config_path: Path | str | None, fresh: bool = False, around: Around | None = None,
                say: Callable[[str], Any] = log.info) -> RunStats:
        """THE loop that runs a plan: ingest, every planned step, the run files, each as a `Call`
        through `around` (the flow: a Prefect task each; benchmarks: a measurement). `say` gets
        each step's one-line summary. Raises RunFailed after ingest when an input file is mostly
        rejected; the kept-count check is the caller's (curation/curate.py still writes its report)."""
        around = around or (lambda call: call.run())
        config, progress = self.config, self.progress
        ingest_body = self.pushing(lambda: run_ingest(config, progress, self.ingest_checkpoint, fresh), self.ingest_checkpoint)
        around(Call("ingest", ingest_body, self.ingest_checkpoint, True))
        say(self.start().stages[-1].summary())
        for step, checkpoint in self.steps():
            records = self.ledger.records  # type: ignore[union-attr]
            if isinstance(step.runner, Expansion):  # LLM steps retry cheaply: answers come back from the cache
                body = partial(run_expansion, step.runner, records, checkpoint, fresh)
                around(Call(step.name, self.pushing(body, checkpoint), checkpoint, retry=True))
            else:
                body = partial(run_stage, step.runner, records, checkpoint, fresh)
                around(Call(step.name, self.pushing(body, checkpoint), checkpoint))
            say(self.absorb(step, checkpoint).summary())
            self.push()  # a step restored from Prefect's cache never ran its body; discarded checkpoints
        return around(Call("write_run", lambda: self.finish(config_path), retry=True))

    def pushing(self, body: Callable[[], Any], checkpoint: Held) -> Callable[[], Any]:
        """`body`, then its checkpoint pushed to the run's URL: a step is done once it is there."""
        mirror = self.mirror
        if mirror is None:
            return body

        def run() -> Any:
            result = body()
            mirror.push_checkpoints([checkpoint])
            return result

        return run

    def push(self) -> None:
        """Every checkpoint absorbed so far to the run's URL: those not there yet, and the removal
        of those the run discarded (rejects before a PII scrub)."""
        if self.mirror is not None:
            self.mirror.push_checkpoints(self.checkpoints)

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
    out: Path | str,
    config_path: Path | str | None = None,
    progress: bool = False,
    fresh: bool = False,
    previous: Version | None = None,
    in_memory: bool = False,
    around: Around | None = None,
) -> RunStats:
    """Curate into `out` in this process: ingest, every planned step, kept/rejected/stats.json.
    Validation, publishing and the report: curation/curate.py. RunFailed after ingest when an
    input file is mostly rejected, and after writing the run files when too few records are kept.

    Streamed by default, as `curate run` does: parquet shards of `execution.batch_size` records,
    each step checkpointed (a re-run resumes). `in_memory`: the same steps with their outputs held
    as frames, no checkpoints (the baseline the streamed path is checked and measured against).
    `around(call)` runs each step's `Call` (benchmarks measure there). `out` may be a URL: the
    run works in a local staging folder mirrored to it (curation/core/mirror.py)."""
    mirror = RunMirror.of(out)
    run = CurationRun(config, mirror.local if mirror else Path(out), progress, previous, in_memory, mirror=mirror)
    stats = run.execute(config_path, fresh, around)
    if mirror is not None:
        mirror.push_run()
    check_kept(stats, config.execution)
    return stats
