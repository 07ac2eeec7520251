"""The pipeline plan: ingest, then every step in order, from one config. The stage order lives here
and nowhere else; the flow (flows/curate.py) and `run_pipeline` (curation/core/run.py) both run it.

STEPS is the one list of steps. Each line (a StepSpec) says which config section the step belongs
to, when it runs, the record columns it reads and writes, what it writes in RUN_DIR, its
preflight check and its builder. Everything else is derived from it: the section list
(curation/core/sections.py: the CLI's help, `curate validate`, a rerun's stale outputs), the
preflight (curation/core/preflight.py), the column check and the plan itself. A new stage is its
package plus one line here (ARCHITECTURE.md, "Adding a stage").

A builder is a function of the PlanContext (the config, RUN_DIR and what steps share: the engine,
the LLM answer cache, budget and jury, the semantic dedup's vectors) that returns the built Step:
the Stage or Expansion with the config sections its checkpoint depends on. The builders (and
ingest_inputs) import their stage package when called: importing this module stays fast. Most steps
split records into kept and rejected (a Stage); synthesis and preference add records (an Expansion).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.base import ConfigError
from schemas.config import CurateConfig
from schemas.figures import Figures

if TYPE_CHECKING:
    import polars as pl

    from curation.core.corpus import Source
    from curation.core.engine import Engine
    from curation.core.stage import Stage, StageResult
    from curation.core.stats import StageStats
    from curation.core.storage import RemotePath
    from curation.dedup.vectors import VectorStore
    from curation.ingest.collect import IngestResult
    from curation.jury.panel import Jury
    from curation.llm.cache import AnswerCache
    from curation.llm.endpoint import Budget
    from curation.publish.versions import Version

TURNS = ("messages", "chosen", "rejected")
CONTENT = ("kind", "text", *TURNS)  # what a record says: the columns text checks read


@dataclass(frozen=True)
class Expansion:
    """A step that adds records (and rejects none): returns the new records and its figures.
    `reads`: the columns it needs in the records it gets (checked when it runs)."""

    name: str
    run: Callable[[pl.DataFrame], tuple[pl.DataFrame, Figures]]
    reads: tuple[str, ...] = ()

    def __call__(self, records: Source) -> tuple[pl.DataFrame, Figures]:
        from curation.core.corpus import collect
        from curation.core.stage import StageError

        missing = [c for c in self.reads if c not in records.columns]
        if missing:
            raise StageError(f"step {self.name}: input lacks columns {missing}")
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
        return not self.adds_records and self.runner.streams  # type: ignore[union-attr]


@dataclass
class PlanContext:
    """What a builder gets: the run's config and RUN_DIR, and what steps share, made on first use
    (one engine; synthesis, the jury and preference share one answer cache and budget, the jury
    and preference one panel). `run_stats`: the run's stage list as it grows (export's card)."""

    config: CurateConfig
    out_dir: Path
    progress: bool = True
    previous: Version | None = None  # a refresh: the published version new records are deduped against
    run_stats: list[StageStats] = field(default_factory=list)

    @cached_property
    def engine(self) -> Engine:
        from curation.core.engine import open_engine

        return open_engine(self.config.execution, self.progress)

    @cached_property
    def cache(self) -> AnswerCache | None:
        from curation.llm.cache import default_cache

        config = self.config
        if not (config.synthesis or config.jury or config.preference):
            return None
        return default_cache(config.jury.cache_dir if config.jury else None)

    @cached_property
    def budget(self) -> Budget | None:
        from curation.llm.endpoint import Budget

        return Budget(self.config.jury.budget_usd) if self.config.jury else None

    @cached_property
    def jury(self) -> Jury | None:
        from curation.jury.panel import Jury

        return Jury(self.config.jury, self.cache, self.budget) if self.config.jury else None

    @property
    def siblings(self) -> bool:
        """Preference pairs from the data's answers: sibling answers to one prompt are candidates,
        not duplicates, so no dedup stage removes them (curation.dedup.siblings)."""
        return self.config.preference is not None and self.config.preference.candidates.existing

    def dedup_sections(self, own: str) -> tuple[str, ...]:
        return (own, "preference.candidates.existing") if self.siblings else (own,)

    @cached_property
    def store(self) -> VectorStore | None:
        """Semantic dedup's vectors of the records it keeps, for select when both embed alike."""
        from curation.dedup.vectors import VECTORS_DIR, VectorStore, encoder_settings

        semantic, select = self.config.dedup and self.config.dedup.semantic, self.config.select
        same = semantic and select and encoder_settings(semantic) == encoder_settings(select.diversity)
        return VectorStore(self.out_dir / VECTORS_DIR) if same else None


@dataclass(frozen=True)
class StepSpec:
    """One line of the plan. `name`: the step's (its stage's) name; `section`: the config section
    it belongs to; `when`: whether it runs (default: the config has `section`); `reads` and
    `writes`: the record columns it needs and adds or rewrites (ingest provides RECORD_SCHEMA);
    `outputs`: what it writes in RUN_DIR besides the records (removed when a rerun into that
    RUN_DIR does not run it); `preflight`: raises ConfigError before any work; `build`: the Step."""

    name: str
    section: str
    build: Callable[[PlanContext], Step]
    when: Callable[[PlanContext], bool] | None = None
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    preflight: Callable[[CurateConfig], None] | None = None

    def runs(self, context: PlanContext) -> bool:
        return self.when(context) if self.when else getattr(context.config, self.section) is not None


def _pii(ctx: PlanContext) -> Step:
    from curation.pii import build_pii_stage
    from curation.pii.stage import redacted_frame

    cfg = ctx.config.pii
    assert cfg is not None
    return Step(build_pii_stage(cfg, ctx.engine), ("pii",), scrub=partial(redacted_frame, cfg=cfg))


def _synthesis(ctx: PlanContext) -> Step:
    import polars as pl

    from curation.llm.chat import open_model
    from curation.llm.tokenizer import load_tokenizer
    from curation.synthesis import synthesize

    cfg, cache, budget = ctx.config.synthesis, ctx.cache, ctx.budget
    assert cfg is not None

    def run(records: pl.DataFrame) -> tuple[pl.DataFrame, Figures]:
        generator = open_model(cfg.generator, cache, budget)
        local = cfg.generator.local
        tokenizer = load_tokenizer(local.path if local else None)  # endpoints: chunk with SmolLM2's
        return synthesize(records.filter(pl.col("kind") == "raw"), cfg, generator, tokenizer, ctx.out_dir, ctx.progress)

    # jury: the answer cache and the budget it shares with the jury
    return Step(Expansion("synthesis", run), ("synthesis", "jury"), "synthesis")


def _filters(ctx: PlanContext) -> Step:
    from curation.filters import build_filter_stage

    assert ctx.config.filters is not None
    return Step(build_filter_stage(ctx.config.filters, ctx.engine), ("filters",))


def _decontamination(ctx: PlanContext) -> Step:
    from curation.decontamination import build_decontamination_stage

    cfg = ctx.config.decontamination
    assert cfg is not None
    stage = build_decontamination_stage(cfg, ctx.out_dir / "decontamination", ctx.engine)
    return Step(stage, ("decontamination",), "decontamination", tuple(b.path for b in cfg.benchmarks))


def _exact(ctx: PlanContext) -> Step:
    from curation.dedup.exact import build_exact_stage

    assert ctx.config.dedup and ctx.config.dedup.exact
    stage = build_exact_stage(ctx.config.dedup.exact, ctx.engine, keep_siblings=ctx.siblings)
    return Step(stage, ctx.dedup_sections("dedup.exact"))


def _minhash(ctx: PlanContext) -> Step:
    from curation.dedup.minhash import build_minhash_stage

    assert ctx.config.dedup and ctx.config.dedup.minhash
    stage = build_minhash_stage(ctx.config.dedup.minhash, ctx.progress, ctx.engine, keep_siblings=ctx.siblings)
    return Step(stage, ctx.dedup_sections("dedup.minhash"))


def _semantic(ctx: PlanContext) -> Step:
    from curation.dedup.semantic import build_semantic_stage
    from curation.dedup.vectors import VECTORS_DIR

    assert ctx.config.dedup and ctx.config.dedup.semantic
    stage = build_semantic_stage(ctx.config.dedup.semantic, ctx.progress, ctx.engine, keep_siblings=ctx.siblings, store=ctx.store)
    return Step(stage, ctx.dedup_sections("dedup.semantic"), VECTORS_DIR if ctx.store else None)


def _published(ctx: PlanContext) -> Step:
    from curation.publish.dedup import build_published_stage

    # which version it is: part of the ingest fingerprint
    stage = build_published_stage(ctx.previous, ctx.config.dedup, ctx.progress, keep_siblings=ctx.siblings)
    return Step(stage, ctx.dedup_sections("dedup"))


def _jury(ctx: PlanContext) -> Step:
    from curation.jury.stage import build_jury_stage

    assert ctx.config.jury and ctx.jury
    stage = build_jury_stage(ctx.config.jury, ctx.jury, ctx.out_dir, progress=ctx.progress, engine=ctx.engine)
    return Step(stage, ("jury",), "jury")


def _preference(ctx: PlanContext) -> Step:
    from curation.preference.pairs import generate_pairs

    cfg = ctx.config.preference
    assert cfg is not None
    run = generate_pairs(cfg, ctx.jury, ctx.cache, ctx.budget, ctx.progress)
    return Step(Expansion("preference", run), ("preference", "jury"))


def _select(ctx: PlanContext) -> Step:
    """Tokens counted as export counts them; IFD with select.ifd.model, else the training base
    model; semantic dedup's vectors when they embed alike (the selection is the same without)."""
    from curation.select import build_select_stage

    config, cfg = ctx.config, ctx.config.select
    assert cfg is not None
    export = config.export
    sections = ("select", "export.tokenizer", "export.chat_template")
    ifd_model = cfg.ifd.model if cfg.ifd else None
    if cfg.ifd is not None and ifd_model is None:
        ifd_model = config.train.base_model if config.train else None
        sections += ("train.base_model",)
    stage = build_select_stage(
        cfg, export.tokenizer if export else None, export.chat_template if export else None, ifd_model, ctx.progress, ctx.store
    )
    return Step(stage, sections)


def _export(ctx: PlanContext) -> Step:
    """The export as the last stage: rows it cannot format correctly become rejects."""
    from curation.core.stage import Stage
    from curation.export import export_run
    from curation.llm.tokenizer import load_tokenizer

    cfg, out_dir, run_stats = ctx.config.export, ctx.out_dir / "export", ctx.run_stats
    assert cfg is not None

    def run(records: pl.DataFrame) -> StageResult:
        # run_stats is read when export runs, so the dataset card sees every earlier stage.
        return export_run(records, cfg, out_dir, load_tokenizer(cfg.tokenizer), run_stats=run_stats)

    return Step(Stage("export", run), ("export",), "export")


# --- ingest: before every line of STEPS (its records are what the first line reads) -------------


def ingest_inputs(config: CurateConfig, progress: bool, work: Path | None) -> IngestResult:
    """The inputs as records, streamed into `work`; on Ray (with `work`) each file read where it lies."""
    from curation.core.engine import open_engine
    from curation.ingest import ingest
    from curation.ingest.parallel import ingest_on_ray

    batch_size = config.execution.batch_size
    if work is not None and config.execution.engine == "ray":
        return ingest_on_ray(config.inputs, open_engine(config.execution, progress), work, batch_size, config.base_dir)
    return ingest(config.inputs, progress=progress, out=work, batch_size=batch_size, base=config.base_dir)


def check_inputs(config: CurateConfig, outputs: tuple[Path | RemotePath, ...]) -> None:
    """Ingest's preflight: every input expands and has a known format; none lies in `outputs`."""
    from curation.ingest import check_inputs

    check_inputs(config.inputs, outputs=outputs)


# --- the steps' preflight checks (curation/core/preflight.py runs those of the planned steps) ---


def _synthesis_template(config: CurateConfig) -> None:
    from jinja2 import TemplateError, meta
    from jinja2.sandbox import SandboxedEnvironment

    from curation.synthesis import load_prompt

    assert config.synthesis is not None
    text = load_prompt(config.synthesis.template)
    try:
        variables = meta.find_undeclared_variables(SandboxedEnvironment().parse(text))
    except TemplateError as e:
        raise ConfigError(f"synthesis.template: {e}") from e
    if "chunk" not in variables:
        raise ConfigError("synthesis.template: the prompt never shows the text to write pairs from: use {{ chunk }}")


def _benchmark_index(config: CurateConfig) -> None:
    from curation.decontamination.index import build_index

    assert config.decontamination is not None
    build_index(config.decontamination)  # built (or read from its cache) here, before any work


def _rubrics(config: CurateConfig) -> None:
    from curation.jury.judge import compile_rubric, load_rubric

    assert config.jury is not None
    for judge in config.jury.judges:
        compile_rubric(judge.name, load_rubric(judge.rubric), config.jury.scale_max)


def _pairwise_rubric(config: CurateConfig) -> None:
    from curation.jury.judge import compile_rubric, load_rubric

    assert config.preference is not None
    if config.preference.pairwise:
        compile_rubric("pairwise", load_rubric(config.preference.pairwise.rubric), 2, comparison=True)


def _ifd_model(config: CurateConfig) -> None:
    from curation.select.ifd import check_ifd_model

    assert config.select is not None
    if config.select.ifd:
        check_ifd_model(config.select.ifd.model or (config.train.base_model if config.train else None))


def _dedup(kind: str) -> Callable[[PlanContext], bool]:
    return lambda ctx: ctx.config.dedup is not None and getattr(ctx.config.dedup, kind) is not None


# The order: PII first (nothing after it, prompts and rejects included, sees what it redacts), then
# synthesis (its pairs then meet the filters, dedup and jury), cheap filters, benchmark
# decontamination (a test item is removed as such, not as a duplicate), cheapest dedup first, then
# (on a refresh) the new records against the published version, the jury on what survives,
# preference pairs from the jury's ratings, the budgeted selection of sft records (after
# preference: pairs are built from every rated answer, the selection is what trains by SFT), and
# export last.
STEPS: tuple[StepSpec, ...] = (
    StepSpec("pii", "pii", _pii, reads=(*CONTENT, "meta"), writes=(*CONTENT[1:], "meta")),
    StepSpec("synthesis", "synthesis", _synthesis, reads=("id", "source", "kind", "text"), outputs=("synthesis",),
             preflight=_synthesis_template),
    StepSpec("filters", "filters", _filters, reads=CONTENT),
    StepSpec("decontamination", "decontamination", _decontamination, reads=CONTENT, outputs=("decontamination",),
             preflight=_benchmark_index),
    StepSpec("dedup_exact", "dedup", _exact, when=_dedup("exact"), reads=(*CONTENT, "meta")),
    StepSpec("dedup_minhash", "dedup", _minhash, when=_dedup("minhash"), reads=(*CONTENT, "meta")),
    StepSpec("dedup_semantic", "dedup", _semantic, when=_dedup("semantic"), reads=(*CONTENT, "meta")),
    StepSpec("dedup_published", "dedup", _published, when=lambda ctx: ctx.previous is not None, reads=(*CONTENT, "meta")),
    StepSpec("jury", "jury", _jury, reads=(*CONTENT, "meta"), writes=("meta",), outputs=("jury",),
             preflight=_rubrics),
    StepSpec("preference", "preference", _preference, reads=("source", *CONTENT, "meta"),
             preflight=_pairwise_rubric),
    StepSpec("select", "select", _select, reads=(*CONTENT, "meta"), writes=("meta",),
             preflight=_ifd_model),
    StepSpec("export", "export", _export, reads=(*CONTENT, "meta"), outputs=("export",)),
)


def planned(context: PlanContext) -> list[StepSpec]:
    """The lines of STEPS this run runs, in order, after their columns are checked: a step that
    reads a column neither ingest nor an earlier step writes is a bug of the plan (StageError),
    found before any step is built or run."""
    from curation.core.stage import StageError
    from schemas.record import RECORD_SCHEMA

    specs = [spec for spec in STEPS if spec.runs(context)]
    available, by = set(RECORD_SCHEMA), ["ingest"]
    for spec in specs:
        missing = [c for c in spec.reads if c not in available]
        if missing:
            raise StageError(f"step {spec.name} reads {missing}, which no earlier step writes ({' -> '.join(by)})")
        available |= set(spec.writes)
        by.append(spec.name)
    return specs


def build_plan(
    config: CurateConfig,
    out_dir: Path,
    progress: bool = True,
    previous: Version | None = None,
    run_stats: list[StageStats] | None = None,
) -> list[Step]:
    """Every step after ingest, in pipeline order (STEPS), those that do not run skipped; each
    stage carries its line's columns, which it checks when it runs. `run_stats` is the run's
    stage list as it grows: export puts it in the card."""
    from curation.core.stage import Stage, StageError

    context = PlanContext(config, out_dir, progress, previous, run_stats if run_stats is not None else [])
    steps = []
    for spec in planned(context):
        step = spec.build(context)
        if step.name != spec.name:
            raise StageError(f"STEPS line {spec.name} built a step named {step.name}")
        runner = step.runner
        if isinstance(runner, Stage):
            runner = replace(runner, reads=spec.reads, writes=spec.writes)
        else:
            runner = replace(runner, reads=spec.reads)
        steps.append(replace(step, runner=runner))
    return steps
