"""Each stage's own figures in stats.json, as typed models: the stage that makes them builds the
model, and every reader (the report, the dataset card, the Prefect artifacts, the CLI, training)
reads its attributes, so a renamed or retyped figure fails validation or mypy, not a page.

stats.json keeps them flat after a stage entry's standard fields (curation.core.stats); a model
here writes exactly the figures its stage set, in field order: a figure that only some runs have
(`siblings_protected`, `confirmed_pairs`, ...) is left out when the stage did not set it. Unknown
keys and wrong types fail validation (`extra="forbid"`).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

from schemas.base import Strict
from schemas.export import ExportedSet

Number = int | float  # a figure that is an int or a float as the stage computed it (kept as such)


class Figures(BaseModel):
    """A stage's figures: only the fields the stage set are written (and were read)."""

    model_config = ConfigDict(extra="forbid")
    STAGE: ClassVar[str] = ""  # the stage entry these figures belong to

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}


class NoFigures(Figures):
    """A stage without figures of its own (and any stage not listed in FIGURES)."""


class InputFile(Strict):
    """What ingest made of one input file (stats.json's `ingest.files`, the report's Sources)."""

    path: str
    format: str
    compression: str | None
    encoding: str | None  # a text file's, as detected; None: parquet, save_to_disk
    shape: str
    rows_read: int
    records: int
    rejected: int
    removed_by_reason: dict[str, int]
    missing_columns: list[str]


class IngestFigures(Figures):
    STAGE = "ingest"
    rows_read: int
    control_chars_removed: int
    files: list[InputFile]
    skipped_files: list[str]


class PiiFigures(Figures):
    STAGE = "pii"
    action: str
    records_with_pii: int
    found: dict[str, int]  # per kind, never the values


class ModelUsage(Strict):
    """What a model consumed (curation.llm.types.Usage)."""

    requests: int
    failures: int
    cached: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Number
    by_error: dict[str, int]


class SynthesisFigures(Figures):
    STAGE = "synthesis"
    documents: int
    chunks: int
    generated: int
    failed_chunks: int
    generator: str
    usage: ModelUsage


class FiltersFigures(Figures):
    STAGE = "filters"
    languages: dict[str, int] | None = None  # the language filter's mix, most common first


class BenchmarkFigures(Strict):
    items: int
    texts: int  # texts checked
    too_short: int  # texts too short to check
    benchmark_overlap: int
    benchmark_paraphrase: int


class DecontaminationFigures(Figures):
    STAGE = "decontamination"
    benchmarks: dict[str, BenchmarkFigures]
    ngram: int
    min_coverage: Number


class ExactFigures(Figures):
    STAGE = "dedup_exact"
    siblings_protected: int | None = None  # with preference siblings kept (curation.dedup.siblings)


class MinhashFigures(Figures):
    STAGE = "dedup_minhash"
    bands: int
    rows: int
    candidate_pairs: int
    confirmed_pairs: int | None = None  # with `verify`
    siblings_protected: int | None = None


class SemanticFigures(Figures):
    STAGE = "dedup_semantic"
    encoder: str
    search: str
    embedded: int
    shared_lines_left_out: int
    kept_as_different_task: dict[str, int] | None = None  # with `verify`: per cause
    siblings_protected: int | None = None


class PublishedFigures(Figures):
    STAGE = "dedup_published"
    published_version: int | None
    matched: dict[str, int] | None = None  # per index kind, with a previous version
    id_conflicts: int | None = None
    rebuilt_indexes: list[str] | None = None
    siblings_protected: int | None = None


class _Model(Strict):
    model: str


class JudgeUsage(ModelUsage, _Model):  # `model` first: pydantic puts the last base's fields first
    pass


class DistillFigures(Figures):
    """The distillation's report: the sample, then the fit's agreement on the hold-out (or why no fit)."""

    sample: int
    error: str | None = None
    n_train: int | None = None
    n_holdout: int | None = None
    spearman: float | None = None
    mae: float | None = None
    accuracy_at_min_score: float | None = None
    warning: str | None = None
    ridge_alpha: float | None = None


class JuryFigures(Figures):
    STAGE = "jury"
    judges: list[str]
    rated: int
    unscored: int
    agreement_alpha: float | None
    mean_spread: float | None
    histogram: dict[str, int]  # "1".."scale_max" and "unscored"
    usage: dict[str, JudgeUsage]
    estimated_cost_usd: float | None
    distill: DistillFigures | None


class PairwiseFigures(Strict):
    compared: int
    confirmed: int
    pairwise_tie: int
    pairwise_disagrees: int
    comparisons: int
    order_consistent: float | None
    first_shown_wins: float | None


class PreferenceFigures(Figures):
    STAGE = "preference"
    prompts: int
    candidates: int
    generated: int
    no_pair_by_reason: dict[str, int]
    chosen_is_longer: float | None  # judges favour longer answers: how often chosen is the longer
    pairwise: PairwiseFigures | None = None
    failed_generations: int = 0


class SelectFigures(Figures):
    STAGE = "select"
    budget: dict[str, int]
    weights: dict[str, Number]
    method: str
    radius: Number | None = None
    mmr_lambda: Number | None = None
    encoder: str
    candidates: int
    selected: int
    not_selected: int
    not_selected_by: dict[str, int]
    passed_through: int
    mean_score_selected: float | None
    short_of_budget: int | None = None
    tokens_used: int | None = None
    # per signal the select stage computed (in the order it computes them)
    mean_jury_selected: float | None = None
    mean_length_selected: float | None = None
    mean_ifd_selected: float | None = None
    timings: dict[str, float]  # seconds per part; the stage's own `seconds` is its total
    embeddings_reused: int


class SpecialTokenFigures(Strict):
    action: str
    records: int
    escaped: int


class ExportFile(Figures):
    rows: int
    skipped: int
    system_column: bool | None = None  # for a file that was written


class TokenHistogram(Strict):
    bin_width: int
    counts: list[int]


class TokenFigures(Figures):
    """Token lengths of one kind's rendered records (only `count` without any)."""

    count: int
    min: int | None = None
    mean: float | None = None
    p50: int | None = None
    p95: int | None = None
    max: int | None = None
    over_max_seq_length: int
    dropped_too_long: int
    kept_for_truncation: int
    histogram: TokenHistogram


class ExportFigures(Figures):
    STAGE = "export"
    chat_template: str
    tokenizer: str
    max_seq_length: int
    overlength: str
    special_tokens: SpecialTokenFigures
    files: dict[str, ExportFile]
    splits: dict[str, ExportedSet]  # per kind: hf/<kind>'s rows, or why it was not written
    tokens: dict[str, TokenFigures]
    not_exported: dict[str, int]  # kept records in no exported set, per kind


# The dedup stages: each says how many preference siblings it kept (`siblings_protected`).
DEDUP_FIGURES = (ExactFigures, MinhashFigures, SemanticFigures, PublishedFigures)

FIGURES: dict[str, type[Figures]] = {
    m.STAGE: m
    for m in (IngestFigures, PiiFigures, SynthesisFigures, FiltersFigures, DecontaminationFigures, ExactFigures,
              MinhashFigures, SemanticFigures, PublishedFigures, JuryFigures, PreferenceFigures, SelectFigures,
              ExportFigures)
}

F = TypeVar("F", bound=Figures)


def figures_model(stage: str) -> type[Figures]:
    """The figures model of a stage entry (NoFigures for a stage without figures of its own)."""
    return FIGURES.get(stage, NoFigures)
