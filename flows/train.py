"""The train flow: SFT, then DPO (or ORPO), then evaluation, on a curated run's exported sets.

Each training stage is a Prefect task; the stage functions are the thin TRL wrappers in
training/. Checkpoints live in RUN_DIR/train/<stage>/ and a re-run resumes from the last one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk
from prefect import State, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import training.common  # the module, not its ContextVar: flows may be pickled by value
from flows.artifacts import ProgressArtifact, slug
from flows.curate import curate_flow
from schemas.config import CurateConfig, load_config
from schemas.train import METHOD_STAGES, TrainConfig, TrainingInputError
from training.dpo import train_dpo, train_orpo
from training.evaluate import dpo_eval, sft_eval
from training.sft import train_sft

SFT_COLUMNS = ["messages"]
PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected"]


def exported(run_dir: Path, name: str, columns: list[str]) -> tuple[Dataset, Dataset | None]:
    """The train and test splits of an exported set, reduced to the columns TRL reads."""
    path = run_dir / "export" / "hf" / name
    if not path.is_dir():
        raise TrainingInputError(
            f"{path} not found: curate the data with an `export:` section first (curate run, or curate all)"
        )
    data = load_from_disk(str(path))
    if not isinstance(data, DatasetDict) or "train" not in data:
        raise TrainingInputError(f"{path}: expected a DatasetDict with a train split")
    missing = [c for c in columns if c not in data["train"].column_names]
    if missing:
        raise TrainingInputError(f"{path}: missing columns {missing}")
    test = data["test"].select_columns(columns) if "test" in data else None
    return data["train"].select_columns(columns), test


@contextmanager
def progress_artifact(key: str | None, stage: str) -> Iterator[None]:
    """Training steps as a Prefect progress artifact (a TrainerCallback in training/common.py)."""
    token = training.common.TRAIN_PROGRESS.set(ProgressArtifact(key, f"{stage} optimizer steps")) if key else None
    try:
        yield
    finally:
        if token is not None:
            training.common.TRAIN_PROGRESS.reset(token)


def progress_key(config_path: str, stage: str) -> str:
    return f"train-{slug(Path(config_path).stem)}-{stage}-progress"


@task(name="sft", cache_policy=NO_CACHE)
def sft_task(cfg: TrainConfig, run_dir: Path, resume: bool, progress_key: str | None = None) -> dict:
    train, test = exported(run_dir, "sft", SFT_COLUMNS)
    with progress_artifact(progress_key, "sft"):
        outcome = train_sft(cfg, train, test, run_dir / "train" / "sft", resume=resume)
    result = _outcome(outcome)
    if cfg.eval.enabled and test is not None:
        result["eval"] = sft_eval(cfg, test, outcome.adapter_dir)
    return result


@task(name="dpo", cache_policy=NO_CACHE)
def dpo_task(
    cfg: TrainConfig, run_dir: Path, sft_adapter: Path | None, resume: bool, progress_key: str | None = None
) -> dict:
    train, test = exported(run_dir, "preference", PREFERENCE_COLUMNS)
    with progress_artifact(progress_key, "dpo"):
        outcome = train_dpo(cfg, train, test, sft_adapter, run_dir / "train" / "dpo", resume=resume)
    result = _outcome(outcome)
    if cfg.eval.enabled and test is not None:
        result["eval"] = dpo_eval(cfg, test, outcome.adapter_dir, sft_adapter)
    return result


@task(name="orpo", cache_policy=NO_CACHE)
def orpo_task(cfg: TrainConfig, run_dir: Path, resume: bool, progress_key: str | None = None) -> dict:
    train, test = exported(run_dir, "preference", PREFERENCE_COLUMNS)
    with progress_artifact(progress_key, "orpo"):
        return _outcome(train_orpo(cfg, train, test, run_dir / "train" / "orpo", resume=resume))


def _outcome(outcome: object) -> dict:
    return json.loads(json.dumps(asdict(outcome), default=str))  # type: ignore[arg-type]


@flow(name="train")
def train_flow(config_path: str, run_dir: str, resume: bool = True) -> dict:
    """Train the configured method's stages in order on RUN_DIR's exported sets."""
    logger = get_run_logger()
    config: CurateConfig = load_config(config_path)
    if config.train is None:
        raise TrainingInputError(f"{config_path}: no `train:` section")
    cfg, out = config.train, Path(run_dir)
    results: dict[str, dict] = {}
    for stage in METHOD_STAGES[cfg.method]:
        if stage == "sft":
            results["sft"] = sft_task(cfg, out, resume, progress_key(config_path, "sft"))
        elif stage == "dpo":
            sft_adapter = Path(results["sft"]["adapter_dir"]) if "sft" in results else None
            results["dpo"] = dpo_task(cfg, out, sft_adapter, resume, progress_key(config_path, "dpo"))
        else:
            results["orpo"] = orpo_task(cfg, out, resume, progress_key(config_path, "orpo"))
        logger.info(f"{stage}: {results[stage]}")
    summary = out / "train" / "summary.json"
    summary.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


@flow(name="curate-then-train")
def curate_then_train(
    config_path: str, run_dir: str, progress: bool = True, resume: bool = True, fresh: bool = False
) -> tuple[dict, dict] | State:
    """`curate all`: the curate flow, then the train flow on its run directory."""
    curated = curate_flow(config_path, run_dir, progress=progress, fresh=fresh, return_state=True)
    if curated.is_failed():
        return curated  # e.g. a failed validation: nothing to train on, and the reason is its own
    return curated.result(), train_flow(config_path, run_dir, resume=resume)
