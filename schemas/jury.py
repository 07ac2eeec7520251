"""Config sections for the LLM stages: `jury`, `synthesis` and `preference`, and the models they use.

A model is either an OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama, TGI)
or a local transformers model (default: the bundled SmolLM2-135M-Instruct). An endpoint's API
key is never in the config: `api_key_env` names the environment variable that holds it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from schemas.base import Strict, TextView
from schemas.record import meta_json

Aggregate = Literal["mean", "median", "majority", "min"]
Method = Literal["jury", "distilled", "unscored"]  # how a record's jury score came about


class Price(Strict):
    """USD per million tokens, for the cost estimate and the budget cap."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class Endpoint(Strict):
    base_url: str = Field(description="e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
    model: str
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the key; null = no key."
    )
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    timeout: float = Field(60.0, gt=0, description="Seconds per request attempt.")
    max_retries: int = Field(
        5, ge=0, description="On timeouts, connection errors, 408/409/429/502/503/504 and non-validation 500s."
    )
    max_consecutive_failures: int = Field(
        10, ge=1, description="Identical failures in a row that stop the run (the endpoint is down or refuses)."
    )
    json_schema: bool = Field(True, description="The endpoint supports response_format json_schema.")
    logprobs: bool = Field(False, description="The endpoint returns token log-probabilities.")
    price: Price | None = None

    @field_validator("api_key_env")
    @classmethod
    def _a_name_not_a_key(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            # Never echo the value: it may be a pasted key.
            raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return value


class Local(Strict):
    path: str | None = Field(None, description="Local HF model directory; null = bundled SmolLM2.")
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(2048, ge=64, description="Prompt tokens kept (the end is kept).")


class ModelSpec(Strict):
    """Exactly one of `endpoint` or `local`; neither = the bundled local model."""

    endpoint: Endpoint | None = None
    local: Local | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSpec:
        if self.endpoint is not None and self.local is not None:
            raise ValueError("set either endpoint or local, not both")
        if self.endpoint is None and self.local is None:
            self.local = Local()
        return self


class Judge(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model: ModelSpec = ModelSpec()
    rubric: str = Field(
        "helpfulness",
        description="A bundled rubric (curation/resources/rubrics/<name>.txt) or a path to a file.",
    )
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(256, ge=1, description="For text answers; a log-prob rating reads 1 token.")
    reasks: int = Field(2, ge=0, description="Re-asks after an unparsable answer.")


class Distill(Strict):
    """Score a sample with the jury, fit a regressor on embeddings, score the rest with it."""

    sample: int = Field(200, ge=10, description="Records the LLM jury scores.")
    holdout: float = Field(0.25, gt=0, lt=1, description="Share of the sample kept for agreement.")
    model: str | None = Field(
        None, description="An encoder as in dedup.semantic.model; null = the bundled all-MiniLM-L6-v2."
    )
    seed: int = 0


class JuryConfig(Strict):
    judges: list[Judge] = Field(default_factory=lambda: [Judge(name="helpfulness")], min_length=1)
    scale_max: int = Field(5, ge=2, le=9, description="Ratings are 1..scale_max (single digits).")
    aggregate: Aggregate = "mean"
    min_score: float | None = Field(None, description="Records scored below this are rejected.")
    max_unscored: float = Field(
        0.05, ge=0, le=1,
        description="Share of the records the jury rates that may end unscored (every judge failed or was "
        "unreadable, or distillation could not fit); past it the run stops: a gate that did not run publishes nothing.",
    )
    unscored: Literal["keep", "reject"] = Field(
        "keep", description="Records left unscored (within max_unscored): kept, or rejected as `unscored`."
    )
    kinds: list[Literal["sft", "raw"]] = Field(["sft"], description="Record kinds the jury rates.")
    max_chars: int = Field(6000, ge=100, description="Per text shown to a judge (longer is cut).")
    cache_dir: str | None = Field(
        None, description="Answer cache folder; null = one shared by all runs (<repo>/.cache/llm)."
    )
    budget_usd: float | None = Field(None, gt=0, description="Stop calling endpoints past this.")
    distill: Distill | None = None

    @model_validator(mode="after")
    def _consistent(self) -> JuryConfig:
        names = [j.name for j in self.judges]
        if len(set(names)) != len(names):
            raise ValueError(f"judge names must be unique: {names}")
        if self.min_score is not None and not 1 <= self.min_score <= self.scale_max:
            raise ValueError(f"min_score ({self.min_score}) is outside the scale 1..{self.scale_max}")
        if self.budget_usd is not None and not any(j.model.endpoint and j.model.endpoint.price for j in self.judges):
            raise ValueError("budget_usd needs a price on at least one endpoint judge")
        return self


class SynthesisConfig(Strict):
    """Raw text -> instruction/answer pairs grounded in token-bounded chunks."""

    generator: ModelSpec = ModelSpec()
    template: str = Field("qa_pairs", description="Bundled prompt name or a path to a file.")
    chunk_tokens: int = Field(384, ge=32)
    chunk_overlap: int = Field(32, ge=0)
    pairs_per_chunk: int = Field(2, ge=1, le=20)
    max_chunks: int | None = Field(None, ge=1, description="Cap on chunks per run (cost control).")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=16)
    view: TextView = "all"
    max_failed: float = Field(
        0.05, ge=0, le=1, description="Share of generation requests that may fail (errors, not unreadable answers)."
    )

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> SynthesisConfig:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be below chunk_tokens ({self.chunk_tokens})")
        return self


class Candidates(Strict):
    existing: bool = Field(True, description="Answers already in the data for the same prompt.")
    generators: list[ModelSpec] = []
    local_temperatures: list[float] = Field([], description="Bundled-model samples at these temperatures.")
    max_tokens: int = Field(256, ge=16)
    max_failed: float = Field(0.05, ge=0, le=1, description="Share of generation requests that may fail.")


class PairwiseCheck(Strict):
    """Each distinct jury model compares a jury-ranked pair's chosen and rejected answers, shown in
    both orders; the pair is kept only when more models prefer chosen than rejected in both orders
    (else dropped: pairwise_tie / pairwise_disagrees). Human-ranked pairs are not second-guessed."""

    rubric: str = Field("pairwise", description="Comparison rubric: a bundled name or a file.")


class PreferenceConfig(Strict):
    candidates: Candidates = Candidates()
    max_prompts: int | None = Field(None, ge=1, description="Cap on prompts (generation cost).")
    ranking: Literal["jury", "human", "human_then_jury", "source"] = Field(
        "human_then_jury",
        description="Human ranks (oasst) where present, else the jury; source: the answer from the file"
        " earlier in source_order beats the one from a later file.",
    )
    source_order: list[str] = Field(
        [],
        description="ranking: source - input files, best first: a file name, or the end of its path"
        " (outputs_gpt4.json, gpt4/outputs.json).",
    )
    rejected: Literal["lowest", "random_lower"] = "lowest"
    min_margin: float = Field(0.5, ge=0)
    min_chosen_score: float | None = None
    pairwise: PairwiseCheck | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _source_ranking_has_an_order(self) -> PreferenceConfig:
        if self.ranking == "source" and len(self.source_order) < 2:
            raise ValueError("ranking: source needs source_order: two or more input files, best first")
        if self.source_order and self.ranking != "source":
            raise ValueError(f"source_order is only read by ranking: source (ranking is {self.ranking!r})")
        return self



class JudgeFailure(Strict):
    """A judge that gave no score for a record: why, and its raw answer."""

    error: str | None
    raw: str | None


class JuryVerdict(Strict):
    """A record's `meta.jury`: the hand-off from the jury stage to preference pairs, select and
    the reject details. The jury stage is its only writer (`into`); readers use `read`.
    Fields left unset (`judges`, `spread`, `failed`) are not written: a distilled or unscored
    record has no per-judge scores, a record every judge scored has no failures."""

    score: float | None  # the aggregate (or distilled) score; None: unscored
    method: Method
    judges: dict[str, float | None] | None = None  # per judge, None where the judge failed
    spread: float | None = None  # max - min of the judges' scores; None when none scored
    failed: dict[str, JudgeFailure] | None = None

    def into(self, meta: str | None) -> str:
        """`meta` (a record's JSON extras) with this verdict as its `jury`."""
        data = orjson.loads(meta) if meta else {}
        data["jury"] = self.model_dump(exclude_unset=True)
        return meta_json(data)

    @classmethod
    def read(cls, meta: str | dict[str, Any] | None) -> JuryVerdict | None:
        """The verdict in a record's meta (JSON text or parsed); None when the jury did not rate it."""
        data = orjson.loads(meta) if isinstance(meta, str) else meta or {}
        verdict = data.get("jury")
        return cls.model_validate(verdict) if verdict is not None else None
