"""Which stages a config asks for, in pipeline order, and the run directory they produce."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from curation.dedup.exact import build_exact_stage
from curation.dedup.minhash import build_minhash_stage
from curation.dedup.semantic import build_semantic_stage
from curation.filters import build_filter_stage
from curation.ingest import IngestResult
from curation.stage import Stage, StageResult
from schemas.config import CurateConfig
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA


class InvariantError(RuntimeError):
    """ingested != kept + rejected: a row was lost or invented. Never silently tolerated."""


def build_stages(config: CurateConfig, progress: bool = True) -> list[Stage]:
    """Stages after ingest, cheapest first; absent config sections are skipped."""
    stages = []
    if config.filters:
        stages.append(build_filter_stage(config.filters))
    dedup = config.dedup
    if dedup and dedup.exact:
        stages.append(build_exact_stage(dedup.exact))
    if dedup and dedup.minhash:
        stages.append(build_minhash_stage(dedup.minhash, progress=progress))
    if dedup and dedup.semantic:
        stages.append(build_semantic_stage(dedup.semantic, progress=progress))
    return stages


@dataclass
class RunLedger:
    """Everything a run has decided so far: the live records, all rejects, per-stage stats."""

    records: pl.DataFrame
    rejects: list[pl.DataFrame] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    ingested: int = 0
    started: float = field(default_factory=time.time)

    @classmethod
    def from_ingest(cls, result: IngestResult) -> RunLedger:
        ingested = result.records.height + result.rejected.height
        return cls(records=result.records, rejects=[result.rejected], stages=[result.stats()], ingested=ingested)

    def record(self, name: str, rows_in: int, result: StageResult) -> None:
        self.records = result.kept
        self.rejects.append(result.rejected)
        self.stages.append(result.stats(name, rows_in))

    def apply(self, stage: Stage) -> StageResult:
        rows_in = self.records.height
        result = stage(self.records)
        self.record(stage.name, rows_in, result)
        return result


def write_run(out_dir: Path, ledger: RunLedger, config_path: Path) -> dict:
    """Write kept.parquet, rejected.parquet and stats.json; check ingested == kept + rejected."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = ledger.records.select(list(RECORD_SCHEMA))
    rejected = pl.concat(ledger.rejects) if ledger.rejects else pl.DataFrame(schema=REJECT_SCHEMA)
    accounted = kept.height + rejected.height
    stats = {
        "config": str(config_path),
        "stages": ledger.stages,
        "totals": {
            "ingested": ledger.ingested,
            "kept": kept.height,
            "rejected": rejected.height,
            "removed_by_stage": {s["stage"]: s["removed"] for s in ledger.stages},
        },
        "invariant": {
            "rule": "ingested == kept + rejected",
            "holds": accounted == ledger.ingested,
        },
        "seconds": round(time.time() - ledger.started, 3),
    }
    kept.write_parquet(out_dir / "kept.parquet")
    rejected.write_parquet(out_dir / "rejected.parquet")
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    if accounted != ledger.ingested:
        raise InvariantError(
            f"{ledger.ingested} records ingested but {kept.height} kept + {rejected.height} rejected"
        )
    return stats
