"""Candidates: each one's stages, evaluation and judging in order, its result.json, and the
ranking of all of them into train/summary.json with the winner linked as train/best.

A candidate's result.json marks it done: a resumed sweep skips a finished candidate while the
fingerprint of its settings matches, and an unfinished one continues from its stages' last
checkpoints. The steps are passed in, so a caller can run each as its own unit (the Prefect
flows make them tasks); the defaults run them in this process. Judging (the jury's win-rate,
the error analysis) is the caller's: training knows no jury.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from schemas.base import StageFailed
from schemas.train import METHOD_STAGES, TrainConfig
from schemas.train_result import (
    BaseMetrics,
    CandidateResult,
    Evaluation,
    Judgement,
    LeaderboardRow,
    Metrics,
    Seconds,
    StageResult,
    TrainSummary,
)
from training.leaderboard import rank
from training.stages import evaluate_candidate, run_stage

RESULT = "result.json"  # a finished candidate: its stages, metrics, win-rate, error analysis
SUMMARY = "summary.json"

StageStep = Callable[[TrainConfig, str, Path, Path, Mapping[str, StageResult], bool], StageResult]
EvaluateStep = Callable[[TrainConfig, Path, Path, Mapping[str, StageResult]], Evaluation]
JudgeStep = Callable[[TrainConfig, list[dict]], Judgement]

log = logging.getLogger(__name__)


def no_judge(cfg: TrainConfig, generations: list[dict]) -> Judgement:
    """Without a jury: no win-rate and no error analysis."""
    return Judgement()


def fingerprint(cfg: TrainConfig, data: str = "") -> str:
    """The hash of a candidate's settings (the ablation is not one: it trains apart) and, for an
    ablation variant, of its data."""
    return hashlib.sha256((cfg.model_dump_json(exclude={"ablation"}) + data).encode()).hexdigest()[:16]


def candidate_dir(run_dir: Path, train: TrainConfig, name: str) -> Path:
    """RUN_DIR/train/ for a single run; RUN_DIR/train/<name>/ for each of several candidates."""
    return run_dir / "train" / name if train.candidates else run_dir / "train"


def finished(out: Path, cfg: TrainConfig, data: str = "") -> CandidateResult | None:
    """The candidate's result.json when it was written with these settings, else None."""
    done = out / RESULT
    if not done.is_file():
        return None
    try:
        result: CandidateResult = CandidateResult.read(done)
    except StageFailed:  # an older version's or a damaged file: the candidate trains again (resuming its checkpoints)
        return None
    return result if result.fingerprint == fingerprint(cfg, data) else None


def train_candidate(
    train: TrainConfig,
    name: str,
    run_dir: Path,
    resume: bool = True,
    *,
    stage_step: StageStep = run_stage,
    evaluate_step: EvaluateStep = evaluate_candidate,
    judge_step: JudgeStep = no_judge,
    info: Callable[[str], None] = log.info,
    variant: tuple[Path, str] | None = None,
) -> CandidateResult:
    """Candidate `name` of the train section (see TrainConfig.candidate_configs) on RUN_DIR's
    exported sets: its stages, the evaluation against the base, the judging; result.json.
    `variant`: an ablation variant's output folder and data hash instead (RUN_DIR is then the
    variant's data, train the ablation's settings)."""
    cfg = train if variant else train.candidate_configs()[name]
    out, data = variant or (candidate_dir(run_dir, train, name), "")
    if resume and (earlier := finished(out, cfg, data)) is not None:
        info(f"candidate {name}: finished earlier ({out / RESULT}), not run again")
        return earlier
    stages: dict[str, StageResult] = {}
    began = time.perf_counter()
    for stage in METHOD_STAGES[cfg.method]:
        stages[stage] = stage_step(cfg, stage, run_dir, out, dict(stages), resume)
        info(f"{name} {stage}: {stages[stage].model_dump(mode='json')}")
    trained = time.perf_counter()
    evaluation = evaluate_step(cfg, run_dir, out, stages)
    evaluated = time.perf_counter()
    judged = judge_step(cfg, evaluation.generations) if evaluation.generations else Judgement()
    seconds = Seconds(
        stages=round(trained - began, 1),
        evaluate=round(evaluated - trained, 1),
        judge=round(time.perf_counter() - evaluated, 1),
    )
    result = candidate_result(name, cfg, stages, evaluation, judged, seconds, data)
    result.write(out / RESULT)
    return result


def candidate_result(
    name: str,
    cfg: TrainConfig,
    stages: dict[str, StageResult],
    evaluation: Evaluation,
    judged: Judgement,
    seconds: Seconds,
    data: str = "",
) -> CandidateResult:
    def metric(key: str) -> float | None:
        value = evaluation.metrics.get(key)
        return None if value is None else float(value)

    win = judged.win_rate
    return CandidateResult(
        name=name,
        fingerprint=fingerprint(cfg, data),
        method=cfg.method,
        adapter_dir=stages[METHOD_STAGES[cfg.method][-1]].adapter_dir,
        stages=stages,
        metrics=Metrics(
            eval_loss=metric("eval_loss_after"),
            rouge_l=metric("rouge_l_after"),
            bertscore=metric("bertscore_after"),
            win_rate=win["win_rate"] if win else None,
        ),
        base_metrics=BaseMetrics(
            eval_loss=metric("eval_loss_before"), rouge_l=metric("rouge_l_before"), bertscore=metric("bertscore_before")
        ),
        win_rate=win,
        errors=judged.errors,
        gguf=evaluation.gguf,
        seconds=seconds,
        row_losses=evaluation.row_losses,
    )


def summarize(train: TrainConfig, run_dir: Path, results: Mapping[str, CandidateResult]) -> TrainSummary:
    """The candidates ranked by train.select_by, the winner's adapter linked as train/best, and
    train/summary.json."""
    order = rank({name: r.metrics.model_dump() for name, r in results.items()}, train.select_by)
    board = [LeaderboardRow(rank=i + 1, name=name, **results[name].metrics.model_dump()) for i, name in enumerate(order)]
    best = run_dir / "train" / "best"
    if best.is_symlink() or best.exists():
        best.unlink()
    best.symlink_to(results[order[0]].adapter_dir.resolve())
    summary = TrainSummary(select_by=list(train.select_by), best=order[0], leaderboard=board, candidates=dict(results))
    summary.write(run_dir / "train" / SUMMARY)
    return summary

