"""What training hands on and writes: a stage's outcome, a candidate's result
(RUN_DIR/train/[<candidate>/]result.json) and the ranked summary of every candidate
(RUN_DIR/train/summary.json). training/ builds them; the CLI's printout, the flows and the
report read them through these models, never as loose dicts.

The win-rate and the error analysis are the jury's and curation's evaluation (their own dicts,
carried as they come). Field order is the files' key order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import SerializerFunctionWrapHandler, ValidationError, model_serializer

from schemas.base import StageFailed, Strict

Figures = dict[str, float | int | None]  # a stage's held-out evaluation (training/evaluate.py)


class Result(Strict):  # written and read by this code only: a stray key is a bug

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Any:
        """The model in `path`; a file this version cannot read stops with its name (exit 4)."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "(top level)"
            raise StageFailed(f"{path}: not a {cls.__name__} this version reads ({where}: {first['msg']})") from None


class StageResult(Result):
    """One training stage (sft, dpo, orpo): its trainer's outcome and, when the stage evaluated
    its adapter on the held-out rows, those figures (`eval`, left out of the file otherwise)."""

    stage: str
    steps: int  # optimizer steps reached, counting those of a resumed checkpoint
    train_loss: float | None
    eval_loss: float | None  # the held-out evaluation's when there was one, else the trainer's last
    tokens_per_second: float | None
    train_rows: int  # train rows offered
    dropped_rows: int  # of those, left out by the length check
    resumed_from: Path | None
    adapter_dir: Path
    merged_dir: Path | None
    eval: Figures | None = None

    @model_serializer(mode="wrap")
    def _without_absent_eval(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("eval") is None:
            data.pop("eval", None)
        return data


class GgufCheck(Result):
    """The GGUF export of the merged model checked against it (training/gguf_export.py)."""

    file: str
    type: str
    bytes: int
    prompts: int
    identical_generations: int
    token_agreement: float
    max_logit_diff: float
    max_weight_diff: float


class Evaluation(Result):
    """The tuned model against its base on the held-out conversations (not written alone)."""

    metrics: Figures = {}
    generations: list[dict[str, Any]] = []  # prompt, reference, base, tuned, *_truncated
    gguf: GgufCheck | None = None
    row_losses: list[float] | None = None  # the tuned model's, per held-out row


class Judgement(Result):
    """The jury's win-rate of tuned over base and the error analysis of both (curation's)."""

    win_rate: dict[str, Any] | None = None
    errors: dict[str, Any] | None = None


class BaseMetrics(Result):
    eval_loss: float | None
    rouge_l: float | None
    bertscore: float | None


class Metrics(BaseMetrics):
    win_rate: float | None


class Seconds(Result):
    stages: float  # the stages include their own evaluation (eval loss before / after, DPO rewards)
    evaluate: float
    judge: float


class CandidateResult(Result):
    """A finished candidate (its result.json): a resumed sweep skips it while `fingerprint`, the
    hash of its train settings, still matches."""

    name: str
    fingerprint: str
    method: str
    adapter_dir: Path  # the last stage's: the tuned model
    stages: dict[str, StageResult]
    metrics: Metrics
    base_metrics: BaseMetrics
    win_rate: dict[str, Any] | None
    errors: dict[str, Any] | None
    gguf: GgufCheck | None
    seconds: Seconds
    # the tuned model's loss on each held-out row (dataset order; rows too long left out alike
    # for every candidate): what paired intervals of a loss difference resample
    row_losses: list[float] | None = None


class LeaderboardRow(Result):
    rank: int
    name: str
    eval_loss: float | None
    rouge_l: float | None
    bertscore: float | None
    win_rate: float | None


class TrainSummary(Result):
    """Every candidate ranked by `select_by`; `best` is linked as train/best."""

    select_by: list[str]
    best: str
    leaderboard: list[LeaderboardRow]
    candidates: dict[str, CandidateResult]


class VariantData(Result):
    """An ablation variant's data (train/ablation/<variant>/data/variant.json): its train rows
    after the held-out ones were removed, and the hash that is part of its fingerprint."""

    name: str
    train_rows: int
    held_out_removed: int  # of its records, conversations of the held-out split (not trained on)
    held_out_rows: int  # the evaluation rows, the same for every variant
    digest: str


class Difference(Result):
    """A variant's figure less the reference variant's on the same held-out rows (rows paired),
    with the 95% interval of a seeded paired bootstrap; within noise when it includes 0."""

    difference: float
    ci95: list[float]
    rows: int  # the paired rows (held-out rows for the loss, sampled answers for an error rate)
    within_noise: bool


class VariantResult(Result):
    data: VariantData
    result: CandidateResult
    # against the reference variant: "eval_loss" (per-row held-out losses) and each error
    # category's rate of the tuned answers; empty where a side has no per-row figures
    versus: dict[str, Difference] = {}
    # "candidate <name>" or "variant <name>": the training whose data and settings were this
    # variant's, its result taken instead of training again; None: trained on its own
    reused: str | None = None


class AblationSummary(Result):
    """Every variant on the same held-out rows (train/ablation/summary.json): the best by
    `metric` and the verdict against `reference`, within noise or not."""

    metric: str
    reference: str
    best: str
    verdict: str
    held_out_ids: list[str]
    variants: dict[str, VariantResult]
