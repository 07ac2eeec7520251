"""The train flow: per candidate SFT, then DPO (or ORPO), then evaluation against the base model,
on a curated run's exported sets; the candidates ranked, the winner linked as train/best.

A thin Prefect layer over training/: each candidate is a subflow running
training.candidates.train_candidate with its steps (a stage, the evaluation, the judging) as
tasks. The judging (win-rate, error analysis) is curation's, the report too; checkpoints,
resume, results and the ranking are training's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect import State, flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

import training.common  # the module, not its ContextVar: flows may be pickled by value
from curation.core.inputs import load_config
from curation.core.mirror import pulled_run
from curation.core.stats import unwritten_sets
from curation.evaluation.judging import judge
from curation.export.ablation import exported_digest, held_out_ids, variant_dir, write_variants
from curation.report.html import write_report
from flows.artifacts import progress_shown, slug
from flows.curate import curate_flow
from schemas.config import CurateConfig
from schemas.train import TrainConfig, TrainingInputError
from schemas.train_result import (
    AblationSummary,
    CandidateResult,
    Evaluation,
    Judgement,
    LeaderboardRow,
    StageResult,
    TrainSummary,
    VariantData,
)
from training.ablation import summarize_ablation, train_variants
from training.base_model import resolve_base_model
from training.candidates import summarize, train_candidate
from training.stages import check_stages, check_variants, evaluate_candidate, run_stage


@task(name="stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def stage_task(
    cfg: TrainConfig,
    stage: str,
    run_dir: Path,
    out: Path,
    stages: Mapping[str, StageResult],
    resume: bool,
    key_prefix: str | None = None,
) -> StageResult:
    key = f"{key_prefix}{stage}-progress" if key_prefix else None
    with progress_shown(training.common.TRAIN_PROGRESS, key, f"{stage} optimizer steps"):
        return run_stage(cfg, stage, run_dir, out, stages, resume)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(cfg: TrainConfig, run_dir: Path, out: Path, stages: Mapping[str, StageResult]) -> Evaluation:
    return evaluate_candidate(cfg, run_dir, out, stages)


@task(name="judge", cache_policy=NO_CACHE)
def judge_task(config: CurateConfig, progress: bool, cfg: TrainConfig, generations: list[dict]) -> Judgement:
    """curation/evaluation/judging.py, with the base model the candidate was trained from."""
    return judge(config, progress, str(resolve_base_model(cfg.base_model)), generations)


def train_one(
    config_path: str, run_dir: str, name: str, data: VariantData | None = None, resume: bool = True, progress: bool = False
) -> CandidateResult:
    """One candidate (training.candidates.train_candidate), its steps as tasks. With `data`, an
    ablation variant: the ablation's training on the variant's data (written by write_variants),
    resumed while its data is the same."""
    config: CurateConfig = load_config(config_path)
    assert config.train is not None
    stem = slug(Path(config_path).stem)
    cfg, work, variant, key_prefix = config.train, Path(run_dir), None, f"train-{stem}-{'' if name == 'main' else f'{name}-'}"
    if data is not None:
        out = variant_dir(Path(run_dir), name)
        cfg, work, variant, key_prefix = cfg.ablation_config(), out / "data", (out, data.digest), f"train-{stem}-ablation-{name}-"
    stage_step = functools.partial(stage_task, key_prefix=key_prefix)
    judge_step = functools.partial(judge_task, config, progress)
    return train_candidate(
        cfg, name, work, resume, stage_step=stage_step, evaluate_step=evaluate_task, judge_step=judge_step,
        info=get_run_logger().info, variant=variant,
    )


candidate_flow = flow(name="train-candidate", flow_run_name="candidate-{name}")(train_one)
variant_flow = flow(name="train-variant", flow_run_name="variant-{name}")(train_one)


def ablation(
    config_path: str, cfg: TrainConfig, run_dir: str, resume: bool, progress: bool, candidates: Mapping[str, CandidateResult]
) -> AblationSummary:
    """Every variant of train.ablation trained (or a training of the same data reused) and
    evaluated on the same held-out rows."""
    assert cfg.ablation is not None
    out = Path(run_dir)
    data = write_variants(out, cfg.ablation)
    first = next(iter(candidates))
    results, reused = train_variants(
        cfg,
        data,
        (first, candidates[first], exported_digest(out)),
        lambda name, d: variant_flow(config_path, run_dir, name, d, resume, progress),
    )
    return summarize_ablation(cfg, out, data, results, held_out_ids(out), reused)


@flow(name="train")
def train_flow(config_path: str, run_dir: str, resume: bool = True, progress: bool = False) -> TrainSummary | State:
    """Train and evaluate every candidate (or the train section alone) on RUN_DIR's exported
    sets, rank them by train.select_by, link the winner's adapter as train/best, write
    train/summary.json, the leaderboard artifact and the report's training section.

    RUN_DIR may be a URL: its run files (train/ included: a resumed sweep continues from the
    checkpoints another machine uploaded) are pulled into a local staging folder, and train/
    and the report pushed back (train/best, a link, stays local: summary.json names the winner)."""
    with pulled_run(run_dir, push=("train", "report.html")) as local:
        config: CurateConfig = load_config(config_path)
        if config.train is None:
            raise TrainingInputError(f"{config_path}: no `train:` section")
        cfg, out = config.train, Path(local)
        try:
            check_stages(cfg, out, unwritten_sets(out, cfg.sets_needed()))  # with the export's reasons
            if cfg.ablation is not None:
                check_variants(cfg, {name: variant_dir(out, name) / "data" for name in write_variants(out, cfg.ablation)})
        except TrainingInputError as exc:  # a failed state, not a raise: the run stops, named, without a traceback
            get_run_logger().error(str(exc))
            return Failed(message=str(exc), data=exc)
        results = {
            name: candidate_flow(config_path, local, name, None, resume, progress) for name in cfg.candidate_configs()
        }
        summary = summarize(cfg, out, results)
        publish_leaderboard(summary.leaderboard, config_path, cfg.select_by)
        if cfg.ablation is not None:
            ablation(config_path, cfg, local, resume, progress, results)
        if (out / "stats.json").is_file():
            write_report(out)
        return summary


def publish_leaderboard(board: list[LeaderboardRow], config_path: str, select_by: Sequence[str]) -> None:
    key = f"train-{slug(Path(config_path).stem)}-leaderboard"
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.model_dump().items()} for row in board]
    create_table_artifact(rows, key=key, description=f"training candidates ranked by {', '.join(select_by)}")


@flow(name="curate-then-train")
def curate_then_train(
    config_path: str, run_dir: str, progress: bool = True, resume: bool = True, fresh: bool = False
) -> tuple[dict, TrainSummary] | State:
    """`curate all`: the curate flow, then the train flow on its run directory."""
    curated = curate_flow(config_path, run_dir, progress=progress, fresh=fresh, return_state=True)
    if curated.is_failed():
        return curated  # e.g. a failed validation: nothing to train on, and the reason is its own
    trained = train_flow(config_path, run_dir, resume=resume, progress=progress, return_state=True)
    if trained.is_failed():
        return trained  # e.g. sets that do not fit train.max_seq_length: its message, no traceback
    summary = trained.result()
    assert isinstance(summary, TrainSummary)  # Completed: its result is the flow's return value
    return curated.result(), summary
