"""The pipeline plan: every step after ingest, in order, from one config. The stage order lives here
and nowhere else; the flow (flows/curate.py) and `run_pipeline` (curation/core/run.py) both run it.

Most steps split records into kept and rejected (a Stage). Two add records instead (an
Expansion): synthesis (new sft pairs from raw text, before the filters so they get the same
checks) and preference (pairs built after the jury). Each step says which config sections its
output depends on (its checkpoint fingerprint covers exactly those) and which folder under
RUN_DIR it writes besides its records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl

from curation.core.checkpoint import CHECKPOINTS
from curation.core.corpus import Source, collect
from curation.core.engine import open_engine
from curation.core.stage import Stage, StageResult
from curation.core.stats import StageStats
from curation.decontamination import build_decontamination_stage
from curation.dedup.exact import build_exact_stage
from curation.dedup.minhash import build_minhash_stage
from curation.dedup.published import build_published_stage
from curation.dedup.semantic import build_semantic_stage
from curation.dedup.vectors import VectorStore, encoder_settings
from curation.export import export_run
from curation.filters import build_filter_stage
from curation.jury.panel import Jury
from curation.jury.stage import build_jury_stage
from curation.llm.cache import AnswerCache, default_cache
from curation.llm.chat import open_model
from curation.llm.endpoint import Budget
from curation.llm.failures import check_failures
from curation.llm.tokenizer import load_tokenizer
from curation.pii import build_pii_stage
from curation.pii.stage import redacted_frame
from curation.preference.pairs import add_generated, build_pairs, group_prompts
from curation.publish.versions import Version
from curation.select import build_select_stage
from curation.synthesis import synthesize
from schemas.base import StageFailed
from schemas.config import CurateConfig
from schemas.figures import Figures
from schemas.jury import Local, ModelSpec

VECTORS_DIR = f"{CHECKPOINTS}/dedup_semantic.vectors"  # under RUN_DIR: semantic dedup's vectors for select


@dataclass(frozen=True)
class Expansion:
    """A step that adds records (and rejects none): returns the new records and its figures."""

    name: str
    run: Callable[[pl.DataFrame], tuple[pl.DataFrame, Figures]]

    def __call__(self, records: Source) -> tuple[pl.DataFrame, Figures]:
        return self.run(collect(records))


@dataclass(frozen=True)
class Step:
    """One planned step: what runs, the config sections its output depends on (dotted paths),
    and the folder under RUN_DIR it writes besides its records (part of its checkpoint)."""

    runner: Stage | Expansion
    sections: tuple[str, ...]
    side_output: str | None = None
    files: tuple[str, ...] = ()  # files its output depends on besides the records (benchmarks)
    # PII: what must not stay on disk. Earlier rejects (ingest's) are rewritten through it and the
    # earlier checkpoints' corpora removed once this step's own checkpoint is written.
    scrub: Callable[[pl.DataFrame], pl.DataFrame] | None = None

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def adds_records(self) -> bool:
        return isinstance(self.runner, Expansion)

    @property
    def streams(self) -> bool:
        """Whether it reads a corpus one shard at a time (else it gets the corpus in one frame)."""
        return isinstance(self.runner, Stage) and self.runner.streams


def build_plan(
    config: CurateConfig,
    out_dir: Path,
    progress: bool = True,
    previous: Version | None = None,
    run_stats: list[StageStats] | None = None,
) -> list[Step]:
    """Every step after ingest, in pipeline order; absent config sections are skipped.

    PII first (nothing after it, prompts and rejects included, sees what it redacts), then
    synthesis (its pairs then meet the filters, dedup and jury), cheap filters, benchmark
    decontamination (a test item is removed as such, not as a duplicate), cheapest dedup first,
    then (on a refresh, `previous`) the new records against the published version, the jury on
    what survives, preference pairs from the jury's ratings, the budgeted selection of sft records
    (after preference: pairs are built from every rated answer, the selection is what trains by
    SFT), and export last. `run_stats` is the
    run's stage list as it grows: export puts it in the card.
    """
    steps: list[Step] = []
    llm = config.synthesis or config.jury or config.preference
    cache = default_cache(config.jury.cache_dir if config.jury else None) if llm else None
    budget = Budget(config.jury.budget_usd) if config.jury else None
    engine = open_engine(config.execution, progress)
    dedup = config.dedup
    if config.pii:
        steps.append(Step(build_pii_stage(config.pii, engine), ("pii",), scrub=partial(redacted_frame, cfg=config.pii)))
    if config.synthesis:
        # jury: the answer cache and the budget it shares with the jury
        steps.append(Step(_synthesis(config, cache, budget, out_dir, progress), ("synthesis", "jury"), "synthesis"))
    if config.filters:
        steps.append(Step(build_filter_stage(config.filters, engine), ("filters",)))
    if config.decontamination:
        decontamination = build_decontamination_stage(config.decontamination, out_dir / "decontamination", engine)
        benchmarks = tuple(b.path for b in config.decontamination.benchmarks)
        steps.append(Step(decontamination, ("decontamination",), "decontamination", benchmarks))
    # With preference pairs from the data's answers, sibling answers to one prompt are candidates,
    # not duplicates: no dedup stage removes them (curation.dedup.siblings).
    siblings = config.preference is not None and config.preference.candidates.existing
    also = ("preference.candidates.existing",) if siblings else ()
    if dedup and dedup.exact:
        steps.append(Step(build_exact_stage(dedup.exact, engine, keep_siblings=siblings), ("dedup.exact", *also)))
    if dedup and dedup.minhash:
        minhash = build_minhash_stage(dedup.minhash, progress, engine, keep_siblings=siblings)
        steps.append(Step(minhash, ("dedup.minhash", *also)))
    # Semantic dedup's vectors of the records it keeps, for select when both embed alike.
    semantic_cfg, select_cfg = dedup.semantic if dedup else None, config.select
    same = semantic_cfg and select_cfg and encoder_settings(semantic_cfg) == encoder_settings(select_cfg.diversity)
    store = VectorStore(out_dir / VECTORS_DIR) if same else None
    if dedup and dedup.semantic:
        semantic = build_semantic_stage(dedup.semantic, progress, engine, keep_siblings=siblings, store=store)
        steps.append(Step(semantic, ("dedup.semantic", *also), VECTORS_DIR if store else None))
    if previous is not None:  # which version it is: part of the ingest fingerprint
        steps.append(Step(build_published_stage(previous, dedup, progress, keep_siblings=siblings), ("dedup", *also)))
    jury = Jury(config.jury, cache, budget) if config.jury else None
    if config.jury and jury:
        steps.append(Step(build_jury_stage(config.jury, jury, out_dir, progress=progress, engine=engine), ("jury",), "jury"))
    if config.preference:
        steps.append(Step(_preference(config, jury, cache, budget, progress), ("preference", "jury")))
    if config.select:
        steps.append(_select(config, progress, store))
    if config.export:
        steps.append(Step(_export(config, out_dir / "export", run_stats if run_stats is not None else []), ("export",), "export"))
    return steps


def _synthesis(
    config: CurateConfig, cache: AnswerCache | None, budget: Budget | None, out_dir: Path, progress: bool
) -> Expansion:
    cfg = config.synthesis
    assert cfg is not None

    def run(records: pl.DataFrame) -> tuple[pl.DataFrame, Figures]:
        generator = open_model(cfg.generator, cache, budget)
        local = cfg.generator.local
        tokenizer = load_tokenizer(local.path if local else None)  # endpoints: chunk with SmolLM2's
        return synthesize(records.filter(pl.col("kind") == "raw"), cfg, generator, tokenizer, out_dir, progress)

    return Expansion("synthesis", run)


def _preference(
    config: CurateConfig, jury: Jury | None, cache: AnswerCache | None, budget: Budget | None, progress: bool
) -> Expansion:
    cfg = config.preference
    assert cfg is not None

    def run(records: pl.DataFrame) -> tuple[pl.DataFrame, Figures]:
        prompts = group_prompts(records, cfg.candidates.existing, cfg.source_order)
        if cfg.max_prompts is not None:
            prompts = prompts[: cfg.max_prompts]
        failed: dict[str, Counter[str]] = {}
        samplers = [(open_model(spec, cache, budget), 0.7, "answers") for spec in cfg.candidates.generators]
        samplers += [
            (open_model(ModelSpec(local=Local()), cache, budget), t, f"answers t={t}") for t in cfg.candidates.local_temperatures
        ]
        for model, temperature, label in samplers:
            bar = label if progress else None
            try:
                failed[model.identity] = add_generated(prompts, model, temperature, cfg.candidates.max_tokens, bar)
            except StageFailed as exc:
                raise StageFailed(f"preference: candidate generator: {exc}") from None
            check_failures(
                "preference candidates", failed[model.identity].total(), len(prompts),
                cfg.candidates.max_failed, "preference.candidates.max_failed", {model.identity: failed[model.identity]},
            )
        pairs, stats = build_pairs(prompts, cfg, jury, progress)
        stats.failed_generations = sum(c.total() for c in failed.values())
        return pairs, stats

    return Expansion("preference", run)


def _select(config: CurateConfig, progress: bool, store: VectorStore | None) -> Step:
    """Tokens counted as export counts them; IFD with select.ifd.model, else the training base
    model; `store`: semantic dedup's vectors (the selection is the same with or without them)."""
    cfg = config.select
    assert cfg is not None
    export = config.export
    sections = ("select", "export.tokenizer", "export.chat_template")
    ifd_model = cfg.ifd.model if cfg.ifd else None
    if cfg.ifd is not None and ifd_model is None:
        ifd_model = config.train.base_model if config.train else None
        sections += ("train.base_model",)
    stage = build_select_stage(
        cfg, export.tokenizer if export else None, export.chat_template if export else None, ifd_model, progress, store
    )
    return Step(stage, sections)


def _export(config: CurateConfig, out_dir: Path, run_stats: list[StageStats]) -> Stage:
    """The export as the last stage: rows it cannot format correctly become rejects."""
    cfg = config.export
    assert cfg is not None

    def run(records: pl.DataFrame) -> StageResult:
        # run_stats is read when export runs, so the dataset card sees every earlier stage.
        return export_run(records, cfg, out_dir, load_tokenizer(cfg.tokenizer), run_stats=run_stats)

    return Stage("export", run)
