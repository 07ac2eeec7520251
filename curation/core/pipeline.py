"""Which stages a config asks for, in pipeline order, and the run directory they produce.

Most stages only split records into kept and rejected. Two add records instead (Expansion):
synthesis (new sft pairs from raw text, before the filters so they get the same checks) and
preference (pairs built after the jury). The ledger counts what they add, so the run's invariant
is ingested + generated == kept + rejected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from curation.core.corpus import Corpus, Source, append, write_parquet
from curation.dedup.exact import build_exact_stage
from curation.dedup.minhash import build_minhash_stage
from curation.dedup.semantic import build_semantic_stage
from curation.core.engine import open_engine
from curation.filters import build_filter_stage
from curation.ingest import IngestResult
from curation.jury.panel import Jury
from curation.jury.stage import build_jury_stage
from curation.llm.cache import default_cache
from curation.llm.endpoint import Budget
from curation.llm.chat import open_model
from curation.llm.tokenizer import load_tokenizer
from curation.preference.pairs import add_generated, build_pairs, group_prompts
from curation.core.stage import Stage, StageResult
from curation.synthesis import synthesize
from schemas.config import CurateConfig
from schemas.jury import Local, ModelSpec
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA


class InvariantError(RuntimeError):
    """ingested + generated != kept + rejected: a row was lost or invented. Never tolerated."""


@dataclass(frozen=True)
class Expansion:
    """A step that adds records (and rejects none): returns the new records and its stats."""

    name: str
    run: Callable[[pl.DataFrame], tuple[pl.DataFrame, dict]]

    def __call__(self, records: Source) -> tuple[pl.DataFrame, dict]:
        return self.run(records.collect() if isinstance(records, Corpus) else records)


def build_stages(config: CurateConfig, out_dir: Path, progress: bool = True) -> list[Stage | Expansion]:
    """Steps after ingest in pipeline order; absent config sections are skipped.

    Synthesis first (its pairs then meet the filters, dedup and jury), cheap filters before
    dedup, the jury on what survives, preference pairs from the jury's ratings.
    """
    stages: list[Stage | Expansion] = []
    llm = config.synthesis or config.jury or config.preference
    cache = default_cache(config.jury.cache_dir if config.jury else None) if llm else None
    budget = Budget(config.jury.budget_usd) if config.jury else None
    if config.synthesis:
        stages.append(_synthesis(config, cache, budget, out_dir, progress))
    engine = open_engine(config.execution, progress)
    if config.filters:
        stages.append(build_filter_stage(config.filters, engine))
    dedup = config.dedup
    if dedup and dedup.exact:
        stages.append(build_exact_stage(dedup.exact, engine))
    if dedup and dedup.minhash:
        stages.append(build_minhash_stage(dedup.minhash, progress, engine))
    if dedup and dedup.semantic:
        stages.append(build_semantic_stage(dedup.semantic, progress, engine))
    jury = Jury(config.jury, cache, budget) if config.jury else None
    if config.jury and jury:
        stages.append(build_jury_stage(config.jury, jury, out_dir, progress=progress, engine=engine))
    if config.preference:
        stages.append(_preference(config, jury, cache, budget, progress))
    return stages


def _synthesis(config: CurateConfig, cache, budget, out_dir: Path, progress: bool) -> Expansion:
    cfg = config.synthesis
    assert cfg is not None

    def run(records: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
        generator = open_model(cfg.generator, cache, budget)
        local = cfg.generator.local
        tokenizer = load_tokenizer(local.path if local else None)  # endpoints: chunk with SmolLM2's
        return synthesize(records.filter(pl.col("kind") == "raw"), cfg, generator, tokenizer, out_dir, progress)

    return Expansion("synthesis", run)


def _preference(config: CurateConfig, jury: Jury | None, cache, budget, progress: bool) -> Expansion:
    cfg = config.preference
    assert cfg is not None

    def run(records: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
        prompts = group_prompts(records, cfg.candidates.existing)
        if cfg.max_prompts is not None:
            prompts = prompts[: cfg.max_prompts]
        failed = 0
        for spec in cfg.candidates.generators:
            model = open_model(spec, cache, budget)
            failed += add_generated(prompts, model, 0.7, cfg.candidates.max_tokens, "answers" if progress else None)
        for temperature in cfg.candidates.local_temperatures:
            model = open_model(ModelSpec(local=Local()), cache, budget)
            bar = f"answers t={temperature}" if progress else None
            failed += add_generated(prompts, model, temperature, cfg.candidates.max_tokens, bar)
        pairs, stats = build_pairs(prompts, cfg, jury, progress)
        stats["failed_generations"] = failed
        return pairs, stats

    return Expansion("preference", run)


@dataclass
class RunLedger:
    """Everything a run has decided so far: the live records, all rejects, per-stage stats."""

    records: Source
    rejects: list[Source] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    ingested: int = 0
    generated: int = 0  # records added by synthesis and preference
    started: float = field(default_factory=time.time)

    @classmethod
    def from_ingest(cls, result: IngestResult) -> RunLedger:
        ingested = result.records.height + result.rejected.height
        return cls(records=result.records, rejects=[result.rejected], stages=[result.stats()], ingested=ingested)

    def record(self, name: str, rows_in: int, result: StageResult) -> None:
        self.records = result.kept
        self.rejects.append(result.rejected)
        self.stages.append(result.stats(name, rows_in))

    def extend(self, name: str, rows_in: int, added: pl.DataFrame, stats: dict) -> None:
        self.records = append(self.records, added)
        self.generated += added.height
        self.stages.append(
            {"in": rows_in, "out": self.records.height, "removed": 0, "removed_by_reason": {}, **stats, "stage": name}
        )

    def apply(self, stage: Stage) -> StageResult:
        rows_in = self.records.height
        result = stage(self.records)
        self.record(stage.name, rows_in, result)
        return result


def write_run(out_dir: Path, ledger: RunLedger, config_path: Path) -> dict:
    """Write kept.parquet, rejected.parquet and stats.json; check ingested == kept + rejected.

    Corpora are streamed into the two files, never collected."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = write_parquet([ledger.records], out_dir / "kept.parquet", RECORD_SCHEMA)
    rejected = write_parquet(ledger.rejects, out_dir / "rejected.parquet", REJECT_SCHEMA)
    accounted = kept + rejected
    expected = ledger.ingested + ledger.generated
    stats = {
        "config": str(config_path),
        "stages": ledger.stages,
        "totals": {
            "ingested": ledger.ingested,
            "generated": ledger.generated,
            "kept": kept,
            "rejected": rejected,
            "removed_by_stage": {s["stage"]: s["removed"] for s in ledger.stages},
        },
        "invariant": {
            "rule": "ingested + generated == kept + rejected",
            "holds": accounted == expected,
        },
        "seconds": round(time.time() - ledger.started, 3),
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    if accounted != expected:
        raise InvariantError(
            f"{ledger.ingested} records ingested + {ledger.generated} generated but"
            f" {kept} kept + {rejected} rejected"
        )
    return stats
