"""The train flow: per candidate SFT, then DPO (or ORPO), then evaluation against the base model,
on a curated run's exported sets; the candidates ranked, the winner linked as train/best.

Each candidate is a Prefect subflow and each training stage a task; the stage functions are the
thin TRL wrappers in training/, the judging (win-rate, error analysis) is curation's. Checkpoints
live in RUN_DIR/train/[<candidate>/]<stage>/ and a re-run resumes from the last one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk
from prefect import State, flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

import training.common  # the module, not its ContextVar: flows may be pickled by value
from curation.core.mirror import RunMirror
from curation.core.stats import unwritten_sets
from curation.evaluation.errors import error_analysis
from curation.evaluation.winrate import win_rate
from curation.jury.panel import Jury
from curation.llm.cache import default_cache
from curation.llm.endpoint import Budget
from curation.llm.tokenizer import load_tokenizer
from curation.report.html import write_report
from flows.artifacts import ProgressArtifact, slug
from flows.curate import curate_flow
from schemas.config import CurateConfig, load_config
from schemas.train import METHOD_STAGES, TrainConfig, TrainingInputError
from training.base_model import resolve_base_model
from training.dpo import preference_inputs, train_dpo, train_orpo
from training.evaluate import bertscore, dpo_eval, evaluate_sft
from training.gguf_export import export_and_verify
from training.leaderboard import rank
from training.sft import sft_inputs, train_sft

SFT_COLUMNS = ["messages"]
PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected"]
GENERATIONS = "generations.json"  # held-out prompts answered by the base and the tuned model
RESULT = "result.json"  # a finished candidate: its stages, metrics, win-rate, error analysis


def exported(run_dir: Path, name: str, columns: list[str]) -> tuple[Dataset, Dataset | None]:
    """The train and test splits of an exported set, reduced to the columns TRL reads."""
    path = run_dir / "export" / "hf" / name
    missing = unwritten_sets(run_dir, [name])
    if missing:
        raise TrainingInputError(f"{path} not found: {missing[name]}")
    data = load_from_disk(str(path))
    if not isinstance(data, DatasetDict) or "train" not in data:
        raise TrainingInputError(f"{path}: expected a DatasetDict with a train split")
    missing = [c for c in columns if c not in data["train"].column_names]
    if missing:
        raise TrainingInputError(f"{path}: missing columns {missing}")
    test = data["test"].select_columns(columns) if "test" in data else None
    return data["train"].select_columns(columns), test


def check_stages(train: TrainConfig, run_dir: Path) -> None:
    """Every stage of every candidate checked on its exported rows before any of them trains:
    a set that does not fit (train.max_seq_length within train.max_dropped, at least a batch)
    stops the run now, not after hours of SFT at the DPO stage. Tokenizing the sets is cheap
    next to one training step; each stage checks its rows again when it starts (resumes)."""
    missing = unwritten_sets(run_dir, train.sets_needed())
    if missing:  # export wrote no such set: a later stage would find nothing to train on
        why = "; ".join(f"export/hf/{kind}: {reason}" for kind, reason in missing.items())
        raise TrainingInputError(f"{run_dir}: train.method needs sets this run has not ({why})")
    for name, cfg in train.candidate_configs().items():
        for stage in METHOD_STAGES[cfg.method]:
            try:
                if stage == "sft":
                    sft_inputs(cfg, *exported(run_dir, "sft", SFT_COLUMNS))
                else:
                    preference_inputs(cfg, stage, *exported(run_dir, "preference", PREFERENCE_COLUMNS))
            except TrainingInputError as exc:
                if train.candidates:
                    raise TrainingInputError(f"candidate {name}: {exc}") from None
                raise


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
def sft_task(cfg: TrainConfig, run_dir: Path, out: Path, resume: bool, progress_key: str | None = None) -> dict:
    train, test = exported(run_dir, "sft", SFT_COLUMNS)
    evaluated = cfg.eval.enabled and test is not None  # the evaluation below computes the final loss
    with progress_artifact(progress_key, "sft"):
        outcome = train_sft(cfg, train, test, out / "sft", resume=resume, final_eval=not evaluated)
    result = _outcome(outcome)
    if evaluated:
        result["eval"], generations = evaluate_sft(cfg, test, outcome.adapter_dir)
        result["eval_loss"] = result["eval"]["eval_loss_after"]
        _write_generations(out / "sft", generations)
    return result


@task(name="dpo", cache_policy=NO_CACHE)
def dpo_task(
    cfg: TrainConfig, run_dir: Path, out: Path, sft_adapter: Path | None, resume: bool, progress_key: str | None = None
) -> dict:
    train, test = exported(run_dir, "preference", PREFERENCE_COLUMNS)
    evaluated = cfg.eval.enabled and test is not None
    with progress_artifact(progress_key, "dpo"):
        outcome = train_dpo(cfg, train, test, sft_adapter, out / "dpo", resume=resume, final_eval=not evaluated)
    result = _outcome(outcome)
    if evaluated:
        result["eval"] = dpo_eval(cfg, test, outcome.adapter_dir, sft_adapter)
        result["eval_loss"] = result["eval"]["eval_loss"]
    return result


@task(name="orpo", cache_policy=NO_CACHE)
def orpo_task(cfg: TrainConfig, run_dir: Path, out: Path, resume: bool, progress_key: str | None = None) -> dict:
    train, test = exported(run_dir, "preference", PREFERENCE_COLUMNS)
    with progress_artifact(progress_key, "orpo"):
        return _outcome(train_orpo(cfg, train, test, out / "orpo", resume=resume))


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(cfg: TrainConfig, run_dir: Path, out: Path, stages: dict) -> dict:
    """The tuned model (the last stage's adapter) against its base on the held-out conversations:
    eval loss, ROUGE-L and BERTScore, the answers behind them (`generations.json`), and the GGUF
    export with its check. Reuses the SFT stage's evaluation when SFT is the last stage."""
    last = stages[METHOD_STAGES[cfg.method][-1]]
    evaluation: dict = {"metrics": {}, "generations": []}
    sft_dir = run_dir / "export" / "hf" / "sft"
    if cfg.eval.enabled and (sft_dir / "test").is_dir():
        if "eval" in last and "eval_loss_after" in last["eval"]:
            metrics, generations = last["eval"], _read_generations(Path(last["adapter_dir"]).parent)
        else:  # the base model's side is the SFT stage's, when there was one
            test = exported(run_dir, "sft", SFT_COLUMNS)[1]
            sft = stages.get("sft", {})
            baseline = None
            if "eval" in sft:
                baseline = (sft["eval"]["eval_loss_before"], _read_generations(Path(sft["adapter_dir"]).parent))
            metrics, generations = evaluate_sft(cfg, test, Path(last["adapter_dir"]), baseline)
            generations = [asdict(g) for g in generations]
        references = [g["reference"] for g in generations]
        evaluation["metrics"] = {
            **metrics,
            **{
                f"bertscore_{when}": bertscore([g[side] for g in generations], references)
                for when, side in (("before", "base"), ("after", "tuned"))
            },
        }
        evaluation["generations"] = generations
    if cfg.export_gguf and last.get("merged_dir"):
        prompts = [g["prompt"] for g in evaluation["generations"]]
        evaluation["gguf"] = export_and_verify(Path(last["merged_dir"]), cfg.export_gguf, prompts, cfg.eval.max_new_tokens)
    _write_generations(out, evaluation["generations"])
    return evaluation


@task(name="judge", cache_policy=NO_CACHE)
def judge_task(config: CurateConfig, cfg: TrainConfig, generations: list[dict], progress: bool) -> dict:
    """Jury win-rate (with a `jury:` section) and error analysis of the base and tuned answers."""
    if not generations:
        return {"win_rate": None, "errors": None}
    win = None
    if config.jury is not None:
        jury = Jury(config.jury, default_cache(config.jury.cache_dir), Budget(config.jury.budget_usd))
        win = win_rate(generations, jury, progress)
        win["usage"] = jury.usage()
    tokenizer = load_tokenizer(str(resolve_base_model(cfg.base_model)))
    repetition = config.filters.repetition if config.filters else None
    return {"win_rate": win, "errors": error_analysis(generations, tokenizer, repetition)}


def _outcome(outcome: object) -> dict:
    return json.loads(json.dumps(asdict(outcome), default=str))  # type: ignore[arg-type]


def _write_generations(folder: Path, generations: list) -> None:
    rows = [g if isinstance(g, dict) else asdict(g) for g in generations]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / GENERATIONS).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_generations(folder: Path) -> list[dict]:
    return json.loads((folder / GENERATIONS).read_text(encoding="utf-8"))


def candidate_dir(run_dir: Path, cfg: TrainConfig, name: str) -> Path:
    """RUN_DIR/train/ for a single run; RUN_DIR/train/<name>/ for each of several candidates."""
    return run_dir / "train" / name if cfg.candidates else run_dir / "train"


@flow(name="train-candidate", flow_run_name="candidate-{name}")
def candidate_flow(config_path: str, run_dir: str, name: str, resume: bool = True, progress: bool = False) -> dict:
    """One candidate: its stages, then evaluation and judging. Its result.json marks it done: a
    resumed sweep skips finished candidates (unless their settings changed) and an unfinished one
    continues from its stages' last checkpoints."""
    logger = get_run_logger()
    config: CurateConfig = load_config(config_path)
    assert config.train is not None
    cfg, data = config.train.candidate_configs()[name], Path(run_dir)
    out = candidate_dir(data, config.train, name)
    fingerprint = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]
    done = out / RESULT
    if resume and done.is_file():
        result = json.loads(done.read_text(encoding="utf-8"))
        if result.get("fingerprint") == fingerprint:
            logger.info(f"candidate {name}: finished earlier ({done}), not run again")
            return result
    stages: dict[str, dict] = {}
    began = time.perf_counter()
    for stage in METHOD_STAGES[cfg.method]:
        key = progress_key(config_path, stage if name == "main" else f"{name}-{stage}")
        if stage == "sft":
            stages["sft"] = sft_task(cfg, data, out, resume, key)
        elif stage == "dpo":
            sft_adapter = Path(stages["sft"]["adapter_dir"]) if "sft" in stages else None
            stages["dpo"] = dpo_task(cfg, data, out, sft_adapter, resume, key)
        else:
            stages["orpo"] = orpo_task(cfg, data, out, resume, key)
        logger.info(f"{name} {stage}: {stages[stage]}")
    trained = time.perf_counter()
    evaluation = evaluate_task(cfg, data, out, stages)
    evaluated = time.perf_counter()
    judged = judge_task(config, cfg, evaluation["generations"], progress)
    seconds = {  # the stages include their own evaluation (eval loss before / after, DPO rewards)
        "stages": round(trained - began, 1),
        "evaluate": round(evaluated - trained, 1),
        "judge": round(time.perf_counter() - evaluated, 1),
    }
    metrics = evaluation["metrics"]
    win = judged["win_rate"]
    result = {
        "name": name,
        "fingerprint": fingerprint,
        "method": cfg.method,
        "adapter_dir": stages[METHOD_STAGES[cfg.method][-1]]["adapter_dir"],
        "stages": stages,
        "metrics": {
            "eval_loss": metrics.get("eval_loss_after"),
            "rouge_l": metrics.get("rouge_l_after"),
            "bertscore": metrics.get("bertscore_after"),
            "win_rate": win["win_rate"] if win else None,
        },
        "base_metrics": {
            "eval_loss": metrics.get("eval_loss_before"),
            "rouge_l": metrics.get("rouge_l_before"),
            "bertscore": metrics.get("bertscore_before"),
        },
        "win_rate": win,
        "errors": judged["errors"],
        "gguf": evaluation.get("gguf"),
        "seconds": seconds,
    }
    done.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


@flow(name="train")
def train_flow(config_path: str, run_dir: str, resume: bool = True, progress: bool = False) -> dict | State:
    """Train and evaluate every candidate (or the train section alone) on RUN_DIR's exported
    sets, rank them by train.select_by, link the winner's adapter as train/best, write
    train/summary.json, the leaderboard artifact and the report's training section.

    RUN_DIR may be a URL: its run files (train/ included: a resumed sweep continues from the
    checkpoints another machine uploaded) are pulled into a local staging folder, and train/
    and the report pushed back (train/best, a link, stays local: summary.json names the winner)."""
    mirror = RunMirror.of(run_dir)
    if mirror is None:
        return _train(config_path, run_dir, resume, progress)
    local = str(mirror.pull_run())
    try:
        return _train(config_path, local, resume, progress)
    finally:
        mirror.push_run(only=("train", "report.html"))


def _train(config_path: str, run_dir: str, resume: bool, progress: bool) -> dict | State:
    config: CurateConfig = load_config(config_path)
    if config.train is None:
        raise TrainingInputError(f"{config_path}: no `train:` section")
    cfg, out = config.train, Path(run_dir)
    try:
        check_stages(cfg, out)
    except TrainingInputError as exc:  # a failed state, not a raise: the run stops, named, without a traceback
        get_run_logger().error(str(exc))
        return Failed(message=str(exc), data=exc)
    results = {
        name: candidate_flow(config_path, run_dir, name, resume, progress) for name in cfg.candidate_configs()
    }
    order = rank({name: r["metrics"] for name, r in results.items()}, cfg.select_by)
    board = [{"rank": i + 1, "name": name, **results[name]["metrics"]} for i, name in enumerate(order)]
    best = out / "train" / "best"
    if best.is_symlink() or best.exists():
        best.unlink()
    best.symlink_to(Path(results[order[0]]["adapter_dir"]).resolve())
    summary = {"select_by": cfg.select_by, "best": order[0], "leaderboard": board, "candidates": results}
    (out / "train" / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    publish_leaderboard(board, config_path, cfg.select_by)
    if (out / "stats.json").is_file():
        write_report(out)
    return summary


def publish_leaderboard(board: list[dict], config_path: str, select_by: list[str]) -> None:
    key = f"train-{slug(Path(config_path).stem)}-leaderboard"
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in board]
    create_table_artifact(rows, key=key, description=f"training candidates ranked by {', '.join(select_by)}")


@flow(name="curate-then-train")
def curate_then_train(
    config_path: str, run_dir: str, progress: bool = True, resume: bool = True, fresh: bool = False
) -> tuple[dict, dict] | State:
    """`curate all`: the curate flow, then the train flow on its run directory."""
    curated = curate_flow(config_path, run_dir, progress=progress, fresh=fresh, return_state=True)
    if curated.is_failed():
        return curated  # e.g. a failed validation: nothing to train on, and the reason is its own
    trained = train_flow(config_path, run_dir, resume=resume, progress=progress, return_state=True)
    if trained.is_failed():
        return trained  # e.g. sets that do not fit train.max_seq_length: its message, no traceback
    return curated.result(), trained.result()
