"""The curate flow: one Prefect task per pipeline stage, calling the plain stage functions.

Each stage's output is checkpointed in RUN_DIR/.checkpoints/<nn>-<stage>/ under a fingerprint
(input files -> each stage's config section, chained), so a re-run into the same RUN_DIR skips
finished stages (Cached in the UI). Artifacts (flows/artifacts.py) are read from the run dir.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

import curation.jury.panel as jury_panel  # the module, not its ContextVar: `serve` pickles these tasks
from curation.core.corpus import Corpus, CorpusWriter, Source
from curation.export import export_run
from curation.ingest import ingest
from curation.llm.tokenizer import load_tokenizer
from curation.core.pipeline import Expansion, RunLedger, build_stages, write_run
from curation.dedup.published import build_published_stage
from curation.publish.inputs import refresh_inputs
from curation.publish.versions import Version, load_version, publish
from curation.report.html import write_report
from curation.core.stage import Stage, StageResult
from curation.report.validate import ValidationFailed, enforce, validate_run
from flows.artifacts import ProgressArtifact, keys, publish_run
from schemas.config import CurateConfig, expand_input, load_config
from schemas.export import ExportConfig
from schemas.validation import ValidationConfig

CHECKPOINTS = ".checkpoints"
FORMAT = "curate-checkpoint-2"  # part of every key: bump it when a stage's output format changes
HASH_LIMIT = 64 << 20  # input files up to this size are hashed; larger ones: size and mtime
# Stages that also write under RUN_DIR: a checkpoint counts only while those files are there.
SIDE_OUTPUTS = {"synthesis": "synthesis", "jury": "jury", "export": "export"}
# The config sections each stage depends on (besides its input, the previous stage's output).
SECTIONS = {
    "synthesis": ("synthesis", "jury"),  # jury: the shared answer cache and budget
    "filters": ("filters",),
    "dedup_exact": ("dedup.exact",),
    "dedup_minhash": ("dedup.minhash",),
    "dedup_semantic": ("dedup.semantic",),
    "jury": ("jury",),
    "preference": ("preference", "jury"),
    "export": ("export",),
}


@dataclass(frozen=True)
class Checkpoint:
    """A finished stage's output in RUN_DIR/.checkpoints/<nn>-<stage>/, valid for one fingerprint.

    `records/` is the corpus the stage kept (for ingest: the records; for a step that adds
    records: what it added), `rejected/` what it removed, `manifest.json` its stats, its
    fingerprint and the side files it wrote. The folder is renamed into place when complete, so a
    killed run leaves either a whole checkpoint or none.
    """

    run_dir: Path
    index: int
    stage: str
    key: str
    batch_size: int = 10_000  # rows per shard

    @property
    def scratch(self) -> Path:
        """Where stages write the corpora they derive before the checkpoint takes them."""
        return scratch_dir(self.run_dir)

    @property
    def dir(self) -> Path:
        return self.run_dir / CHECKPOINTS / f"{self.index:02d}-{self.stage}"

    def manifest(self) -> dict | None:
        """The manifest if this checkpoint is complete, for this fingerprint, with its side files."""
        try:
            manifest = json.loads((self.dir / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        files = [self.dir / f for f in manifest.get("frames", [])] + [self.run_dir / f for f in manifest.get("outputs", [])]
        if manifest.get("key") != self.key or not all(f.exists() for f in files):
            return None
        return manifest

    def save(self, records: Source, rejected: Source | None, stats: dict) -> dict:
        """Moves corpora into the checkpoint (they leave the scratch dir); writes frames."""
        partial = self.dir.with_name(self.dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        frames = {"records": records, "rejected": rejected}
        for name, frame in frames.items():
            if isinstance(frame, Corpus) and frame.dir.is_relative_to(self.scratch):
                frame.move(partial / name)
            elif isinstance(frame, Corpus):  # not this run's to take (e.g. an earlier checkpoint)
                shutil.copytree(frame.dir, partial / name)
            elif frame is not None:
                writer = CorpusWriter(partial / name, self.batch_size, self.scratch, frame.schema)
                writer.write(frame)
                writer.close()
        side = SIDE_OUTPUTS.get(self.stage)
        outputs = (
            sorted(str(f.relative_to(self.run_dir)) for f in (self.run_dir / side).rglob("*") if f.is_file())
            if side and (self.run_dir / side).is_dir()
            else []
        )
        manifest = {
            "stage": self.stage,
            "key": self.key,
            "frames": [name for name, frame in frames.items() if frame is not None],
            "outputs": outputs,
            "stats": json.loads(json.dumps(stats, default=str)),
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(self.dir, ignore_errors=True)
        partial.rename(self.dir)
        return manifest

    def load(self) -> tuple[Corpus, Corpus | None, dict]:
        manifest = self.manifest()
        if manifest is None:
            raise RuntimeError(f"{self.dir}: checkpoint missing or stale after its task ran")
        rejected = self.dir / "rejected"
        return (
            Corpus.open(self.dir / "records", self.batch_size, self.scratch),
            Corpus.open(rejected, self.batch_size, self.scratch) if rejected.is_dir() else None,
            manifest["stats"],
        )


def scratch_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS / ".scratch"


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def input_fingerprint(config: CurateConfig) -> str:
    """The ingest key: the inputs section and every input file (size + sha256, or size + mtime)."""
    parts = [FORMAT, "ingest", json.dumps([s.model_dump(mode="json") for s in config.inputs], sort_keys=True)]
    for spec in config.inputs:
        for path in expand_input(spec.path):
            files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
            for f in files:
                st = f.stat()
                content = _file_sha256(f) if st.st_size <= HASH_LIMIT else f"mtime {st.st_mtime_ns}"
                parts.append(f"{f.resolve()} {st.st_size} {content}")
    return _digest(*parts)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_fingerprint(previous: str, name: str, config: CurateConfig) -> str:
    """A stage's key: the previous stage's key, its name and its config sections."""
    sections: dict = {}
    for dotted in SECTIONS.get(name, ()):
        value = config
        for attr in dotted.split("."):
            value = getattr(value, attr, None) if value is not None else None
        sections[dotted] = value.model_dump(mode="json") if value is not None else None
    if name not in SECTIONS:  # a stage this table does not know: the whole config, to be safe
        sections["*"] = config.model_dump(mode="json")
    return _digest(FORMAT, previous, name, json.dumps(sections, sort_keys=True, default=str))


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


def _restored(checkpoint: Checkpoint, fresh: bool) -> dict | None:
    """A complete checkpoint whose Prefect cache record is missing (killed in between)."""
    manifest = None if fresh else checkpoint.manifest()
    if manifest is not None:
        get_run_logger().info(f"{checkpoint.stage}: restored from {checkpoint.dir}")
    return manifest


@task(name="ingest", retries=1, retry_delay_seconds=2, **CACHED)
def ingest_task(config: CurateConfig, progress: bool, checkpoint: Checkpoint, fresh: bool = False) -> dict:
    if (manifest := _restored(checkpoint, fresh)) is not None:
        return manifest
    work = checkpoint.scratch / "ingest"
    result = ingest(config.inputs, progress=progress, out=work, batch_size=config.execution.batch_size)
    manifest = checkpoint.save(result.records, result.rejected, result.stats())
    shutil.rmtree(work, ignore_errors=True)
    return manifest


@task(**CACHED)
def stage_task(
    stage: Stage, records: Corpus, checkpoint: Checkpoint, fresh: bool = False, progress_key: str | None = None
) -> dict:
    if (manifest := _restored(checkpoint, fresh)) is not None:
        return manifest
    token = jury_panel.JURY_PROGRESS.set(ProgressArtifact(progress_key, "jury ratings")) if progress_key else None
    try:
        result = stage(records)
    finally:
        if token is not None:
            jury_panel.JURY_PROGRESS.reset(token)
    return checkpoint.save(result.kept, result.rejected, result.stats(stage.name, records.height))


# LLM steps retry cheaply: every answer already received comes back from the answer cache.
@task(retries=1, retry_delay_seconds=5, **CACHED)
def expansion_task(step: Expansion, records: Corpus, checkpoint: Checkpoint, fresh: bool = False) -> dict:
    if (manifest := _restored(checkpoint, fresh)) is not None:
        return manifest
    start = time.perf_counter()
    added, stats = step(records)
    stats["seconds"] = round(time.perf_counter() - start, 3)
    return checkpoint.save(added, None, stats)


@task(name="write-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def write_task(out_dir: Path, ledger: RunLedger, config_path: Path) -> dict:
    return write_run(out_dir, ledger, config_path)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(config: CurateConfig, out_dir: Path, previous: Version | None) -> Path:
    version = publish(config.publish.dir, out_dir, config, previous, inputs=[Path(s.path) for s in config.inputs])
    # The run directory says which version it became and what changed (the report shows it).
    diff = json.loads((version / "diff.json").read_text())
    (out_dir / "publish.json").write_text(json.dumps({"version_dir": str(version), **diff}, indent=2) + "\n")
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


def expand_out_dir(pattern: str) -> Path:
    """`{time}` in an output directory becomes the start time: scheduled runs get a new one each."""
    return Path(pattern.replace("{time}", time.strftime("%Y%m%d-%H%M%S")))


@flow(name="curate", log_prints=False)
def curate_flow(config_path: str, out_dir: str, progress: bool = True, fresh: bool = False) -> dict | Failed:
    """Ingest -> synthesis -> filters -> dedup -> jury -> preference pairs -> export -> run directory.

    Each stage's output is checkpointed under OUT_DIR/.checkpoints/ with a fingerprint of its
    inputs and config section: re-running into the same OUT_DIR skips finished stages (their
    tasks show as Cached) unless `fresh`.
    """
    logger = get_run_logger()
    config = load_config(config_path)
    out = expand_out_dir(out_dir)
    stem = Path(config_path).stem
    previous = None
    if config.publish:  # a refresh: only inputs the latest version has not consumed
        previous = load_version(config.publish.dir)
        config.inputs = refresh_inputs(config.publish.dir, config.inputs)
        if not config.inputs:
            logger.info(f"no new inputs since version {previous.number if previous else '-'}: nothing to publish")
            return {"stages": [], "totals": {"ingested": 0, "generated": 0, "kept": 0, "rejected": 0}, "seconds": 0.0}
    # The version a refresh dedups against is an input too.
    published = str(previous.number) if previous else ""
    batch_size = config.execution.batch_size
    shutil.rmtree(scratch_dir(out), ignore_errors=True)  # a killed run's half-written corpora
    checkpoint = Checkpoint(out, 0, "ingest", _digest(input_fingerprint(config), published), batch_size)
    ingest_task.with_options(**_options(checkpoint, fresh))(config, progress, checkpoint, fresh)
    records, rejected, stats = checkpoint.load()
    ledger = RunLedger(records=records, rejects=[rejected], stages=[stats], ingested=records.height + rejected.height)
    logger.info(_summary("ingest", ledger.stages[-1]))
    stages = build_stages(config, out, progress=progress)
    if previous is not None:  # new records against the published version, after in-run dedup
        dedup_names = [i for i, st in enumerate(stages) if st.name.startswith(("dedup_", "filters", "synthesis"))]
        at = dedup_names[-1] + 1 if dedup_names else 0
        stages.insert(at, build_published_stage(previous, config.dedup, progress))
    if config.export:
        stages.append(export_stage(config.export, out / "export", ledger))
    key = checkpoint.key
    for index, stage in enumerate(stages, start=1):
        key = stage_fingerprint(key, stage.name, config)
        checkpoint = Checkpoint(out, index, stage.name, key, batch_size)
        options = _options(checkpoint, fresh)
        rows_in = ledger.records.height
        if isinstance(stage, Expansion):
            expansion_task.with_options(**options)(stage, ledger.records, checkpoint, fresh)
            added, _, step_stats = checkpoint.load()
            ledger.extend(stage.name, rows_in, added.collect(), step_stats)
        else:
            progress_key = keys(stem)["jury_progress"] if stage.name == "jury" else None
            stage_task.with_options(**options)(stage, ledger.records, checkpoint, fresh, progress_key)
            kept, rejected, stats = checkpoint.load()
            ledger.records = kept
            ledger.rejects.append(rejected)
            ledger.stages.append(stats)
        logger.info(_summary(stage.name, ledger.stages[-1]))
    stats = write_task(out, ledger, Path(config_path))
    shutil.rmtree(scratch_dir(out), ignore_errors=True)
    totals = stats["totals"]
    logger.info(f"kept {totals['kept']} of {totals['ingested']}; rejects in {out}/rejected.parquet")
    failure = None
    if config.validation:
        summary = validate_task(out, config.validation)
        logger.info("validation: " + ", ".join(f"{s['name']} {'passed' if s['success'] else 'FAILED'}" for s in summary["suites"]))
        try:
            enforce(summary)
        except ValidationFailed as exc:
            failure = exc
    if config.publish and failure is None:
        version = publish_task(config, out, previous)
        logger.info(f"published {version}")
    report = report_task(out)  # also after a failed validation: it shows what failed
    logger.info(f"report: {report}")
    artifacts_task(out, stem)
    if failure is not None:
        # A failed state carrying the error, not a raise: the run stops, named, without a traceback.
        logger.error(str(failure))
        return Failed(message=str(failure), data=failure)
    return stats
