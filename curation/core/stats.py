"""The run's stats (RUN_DIR/stats.json) as typed models: written by the core, read by the report,
the dataset card, the Prefect artifacts and the CLI.

Every stage entry has the same standard fields, then the stage's own figures (the jury's
histogram, semantic dedup's search, ...) flat beside them in the file: in the model they are
`figures`, the typed model schemas.figures registers for the stage's name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from curation.core.corpus import atomic_path
from schemas.base import ConfigError, StageFailed
from schemas.execution import ExecutionConfig
from schemas.export import NOT_EXPORTED, ExportedSet
from schemas.figures import ExportFigures, F, Figures, IngestFigures, InputFile, NoFigures, figures_model

STATS_FILE = "stats.json"
INVARIANT = "ingested + generated == kept + rejected"


STANDARD = ("stage", "in", "out", "removed", "removed_by_reason", "seconds")  # a stage entry's fields, in order


class StageStats(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    stage: str
    rows_in: int = Field(alias="in")
    out: int
    removed: int
    removed_by_reason: dict[str, int] = {}
    seconds: float | None = None
    figures: SerializeAsAny[Figures] = Field(default_factory=NoFigures)  # its stage's model (schemas.figures)

    @model_validator(mode="before")
    @classmethod
    def _figures_beside(cls, data: Any) -> Any:
        """stats.json's flat entry: every key past the standard fields is a figure of the stage."""
        if not isinstance(data, dict) or "figures" in data:
            return data
        figures = {k: v for k, v in data.items() if k not in STANDARD and k != "rows_in"}
        standard = {k: v for k, v in data.items() if k not in figures}
        return {**standard, "figures": figures_model(str(data.get("stage"))).model_validate(figures)}

    @model_validator(mode="after")
    def _figures_of_the_stage(self) -> StageStats:
        expected = figures_model(self.stage)
        if type(self.figures) is not expected:
            raise ValueError(f"stage {self.stage}: figures are {type(self.figures).__name__}, not {expected.__name__}")
        return self

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        figures = data.pop("figures")
        return {**data, **figures}

    def figures_as(self, kind: type[F]) -> F:
        """The figures as the model of this stage (TypeError for another stage's model)."""
        if not isinstance(self.figures, kind):
            raise TypeError(f"stage {self.stage} has {type(self.figures).__name__}, not {kind.__name__}")
        return self.figures

    def reasons_text(self, limit: int | None = None) -> str:
        """`reason count, ...`, most frequent first."""
        return ", ".join(f"{r} {n}" for r, n in list(self.removed_by_reason.items())[:limit])

    def summary(self) -> str:
        """One log line: `filters: 120 in, 100 out (removed: too_short 20)`."""
        added = f", {self.out - self.rows_in} generated" if self.out > self.rows_in else ""
        reasons = self.reasons_text()
        return f"{self.stage}: {self.rows_in} in, {self.out} out{added}" + (f" (removed: {reasons})" if reasons else "")


class Totals(BaseModel):
    ingested: int
    generated: int = 0
    kept: int
    rejected: int
    removed_by_stage: dict[str, int] = {}


class Invariant(BaseModel):
    rule: str = INVARIANT
    holds: bool


class RunStats(BaseModel):
    config: str | None = None  # the config file's absolute path
    config_sha256: str | None = None  # and its content: `curate train` finds a config's run by both
    stages: list[StageStats]
    totals: Totals
    invariant: Invariant | None = None
    seconds: float = 0.0

    def stage(self, name: str) -> StageStats | None:
        return next((s for s in self.stages if s.stage == name), None)

    def figures(self, kind: type[F]) -> F | None:
        """The figures of the stage `kind` belongs to; None when the run had no such stage."""
        entry = self.stage(kind.STAGE)
        return entry.figures_as(kind) if entry else None

    def exported_sets(self) -> dict[str, ExportedSet]:
        """The export stage's sets (hf/<kind>): rows per split, or why one was not written."""
        export = self.figures(ExportFigures)
        return export.splits if export else {}

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=False), indent=2) + "\n"

    def write(self, run_dir: Path) -> None:
        with atomic_path(run_dir / STATS_FILE) as tmp:  # a reader never sees half a file
            tmp.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def read(cls, run_dir: Path) -> RunStats:
        """RUN_DIR/stats.json; FileNotFoundError when the directory has none, StatsUnreadable
        (one line, exit 2) when it is not this version's (half-written, foreign, or older)."""
        path = run_dir / STATS_FILE
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the file"
            raise StatsUnreadable(
                f"{path}: not a stats.json this version reads ({where}: {first['msg']}); curate the run again"
            ) from None


class StatsUnreadable(ConfigError, ValueError):
    """A stats.json this version cannot read: a ConfigError for the CLI (one line, exit 2), a
    ValueError for the readers that skip foreign run directories."""


def unwritten_sets(run_dir: Path, kinds: list[str]) -> dict[str, str]:
    """Of these sets, those RUN_DIR/export/hf/ lacks, each with why (the export's own reason)."""
    try:
        sets = RunStats.read(run_dir).exported_sets()
    except (OSError, ValueError):  # no stats.json, or a foreign one
        sets = {}
    missing = {}
    for kind in kinds:
        if not (run_dir / "export" / "hf" / kind).is_dir():
            known = sets.get(kind)
            why = known.not_written if known and not known.written else None
            missing[kind] = why or NOT_EXPORTED
    return missing


def config_sha256(path: Path | str) -> str | None:
    """The sha256 of a config file's bytes; None when there is no such file."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def stage_stats(
    name: str, rows_in: int, rows_out: int, removed_by_reason: dict[str, int], seconds: float | None,
    figures: Figures | dict[str, Any],
) -> StageStats:
    """A stage entry: the standard fields, and the stage's own figures (its model, or their JSON
    as a checkpoint manifest keeps them), validated as the model registered for `name`."""
    given = figures.model_dump() if isinstance(figures, Figures) else figures
    return StageStats(stage=name, rows_in=rows_in, out=rows_out, removed=sum(removed_by_reason.values()),
                      removed_by_reason=removed_by_reason, seconds=seconds,
                      figures=figures_model(name).model_validate(given))


class RunFailed(StageFailed):
    """The run worked but its outcome is not usable: an input file mostly lost at ingest
    (`execution.max_ingest_rejected`), or fewer records kept than `execution.min_kept`
    (exit code 4, like every StageFailed)."""


def check_ingest(stats: StageStats, execution: ExecutionConfig) -> None:
    """RunFailed naming every input file that lost more than its allowed share at ingest, with
    its top reasons: a wrong format, shape or mapping must not curate a sliver of the file."""
    check_ingest_files(stats.figures_as(IngestFigures).files, execution)


def check_ingest_files(files: list[InputFile], execution: ExecutionConfig) -> None:
    """check_ingest on ingest's per-file reports (stats.json's `ingest.files`; `curate validate`'s sample)."""
    limit = execution.max_ingest_rejected
    lost = []
    for f in files:
        outcomes = f.records + f.rejected
        if outcomes and f.rejected / outcomes > limit:
            reasons = ", ".join(f"{r} {n}" for r, n in list(f.removed_by_reason.items())[:3])
            detected = ", ".join(str(x) for x in (f.format, f.encoding, f.shape) if x)
            lost.append(f"  {f.path} ({detected}): {f.rejected} of {outcomes} rejected ({reasons})")
    if lost:
        raise RunFailed(
            f"ingest rejected more than {limit:.0%} of an input file (execution.max_ingest_rejected);"
            " check its format:, shape: or columns: (curate validate shows what was detected):\n" + "\n".join(lost)
        )


def check_kept(stats: RunStats, execution: ExecutionConfig) -> None:
    """RunFailed when the run kept fewer than `execution.min_kept` records, with the top reasons."""
    if stats.totals.kept >= execution.min_kept:
        return
    removed = sorted(((n, f"{s.stage} {r}") for s in stats.stages for r, n in s.removed_by_reason.items()), reverse=True)
    reasons = ", ".join(f"{what} {n}" for n, what in removed[:5]) or "none"
    raise RunFailed(
        f"kept {stats.totals.kept} of {stats.totals.ingested} records, fewer than execution.min_kept"
        f" ({execution.min_kept}); top reasons: {reasons}"
    )
