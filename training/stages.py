"""A candidate's stages on a curated run's exported sets, and its evaluation against the base.

The sets are RUN_DIR/export/hf/<sft|preference> (`datasets` DatasetDicts with a train and,
usually, a test split). Each stage trains into OUT/<stage>/ (checkpoints, `adapter/`, resumable)
and, with a test split, evaluates its adapter on it. The candidate's evaluation reuses the SFT
stage's when SFT is the last stage, and the base model's side of it otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk

from schemas.export import NOT_EXPORTED
from schemas.train import METHOD_STAGES, TrainConfig, TrainingInputError
from schemas.train_result import Evaluation, Figures, GgufCheck, StageResult
from training.common import TrainOutcome
from training.dpo import preference_inputs, train_dpo, train_orpo
from training.evaluate import bertscore, dpo_eval, evaluate_sft, row_losses
from training.gguf_export import export_and_verify
from training.sft import sft_inputs, train_sft

SFT_COLUMNS = ["messages"]
PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected"]
GENERATIONS = "generations.json"  # held-out prompts answered by the base and the tuned model


def exported(run_dir: Path, name: str, columns: list[str]) -> tuple[Dataset, Dataset | None]:
    """The train and test splits of an exported set, reduced to the columns TRL reads."""
    path = run_dir / "export" / "hf" / name
    if not path.is_dir():
        raise TrainingInputError(f"{path} not found: {NOT_EXPORTED}")
    data = load_from_disk(str(path))
    if not isinstance(data, DatasetDict) or "train" not in data:
        raise TrainingInputError(f"{path}: expected a DatasetDict with a train split")
    missing = [c for c in columns if c not in data["train"].column_names]
    if missing:
        raise TrainingInputError(f"{path}: missing columns {missing}")
    test = data["test"].select_columns(columns) if "test" in data else None
    return data["train"].select_columns(columns), test


def check_stages(train: TrainConfig, run_dir: Path, missing: Mapping[str, str] | None = None) -> None:
    """Every stage of every candidate checked on its exported rows before any of them trains:
    a set that does not fit (train.max_seq_length within train.max_dropped, at least a batch)
    stops the run now, not after hours of SFT at the DPO stage. Tokenizing the sets is cheap
    next to one training step; each stage checks its rows again when it starts (resumes).
    `missing`: the sets the run lacks, each with why (the caller may know the export's reason)."""
    if missing is None:
        missing = {k: NOT_EXPORTED for k in train.sets_needed() if not (run_dir / "export" / "hf" / k).is_dir()}
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


def check_variants(train: TrainConfig, data_dirs: Mapping[str, Path]) -> None:
    """check_stages for train.ablation's training on each variant's rows (`data_dirs`: variant ->
    its data folder), every variant before anything trains; the error names the variant."""
    for name, folder in data_dirs.items():
        try:
            check_stages(train.ablation_config(), folder)
        except TrainingInputError as exc:
            raise TrainingInputError(f"train.ablation variant {name}: {exc}") from None


def sft_stage(cfg: TrainConfig, run_dir: Path, out: Path, resume: bool = True) -> StageResult:
    """SFT into OUT/sft/; with a test split, the adapter evaluated against the base (eval loss,
    ROUGE-L) and the answers behind it in OUT/sft/generations.json."""
    train, test = exported(run_dir, "sft", SFT_COLUMNS)
    evaluated = cfg.eval.enabled and test is not None  # the evaluation below computes the final loss
    outcome = train_sft(cfg, train, test, out / "sft", resume=resume, final_eval=not evaluated)
    if not cfg.eval.enabled or test is None:
        return stage_result(outcome)
    metrics, generations = evaluate_sft(cfg, test, outcome.adapter_dir)
    write_generations(out / "sft", [asdict(g) for g in generations])
    return stage_result(outcome, metrics, metrics["eval_loss_after"])


def dpo_stage(cfg: TrainConfig, run_dir: Path, out: Path, sft_adapter: Path | None, resume: bool = True) -> StageResult:
    """DPO into OUT/dpo/, continuing `sft_adapter` (also its reference) or a fresh adapter."""
    train, test = exported(run_dir, "preference", PREFERENCE_COLUMNS)
    evaluated = cfg.eval.enabled and test is not None
    outcome = train_dpo(cfg, train, test, sft_adapter, out / "dpo", resume=resume, final_eval=not evaluated)
    if not cfg.eval.enabled or test is None:
        return stage_result(outcome)
    metrics = dpo_eval(cfg, test, outcome.adapter_dir, sft_adapter)
    return stage_result(outcome, dict(metrics), metrics["eval_loss"])


def orpo_stage(cfg: TrainConfig, run_dir: Path, out: Path, resume: bool = True) -> StageResult:
    train, test = exported(run_dir, "preference", PREFERENCE_COLUMNS)
    return stage_result(train_orpo(cfg, train, test, out / "orpo", resume=resume))


def run_stage(
    cfg: TrainConfig, stage: str, run_dir: Path, out: Path, stages: Mapping[str, StageResult], resume: bool = True
) -> StageResult:
    """One of the method's stages, after those in `stages` (DPO continues the SFT adapter)."""
    if stage == "sft":
        return sft_stage(cfg, run_dir, out, resume)
    if stage == "dpo":
        return dpo_stage(cfg, run_dir, out, stages["sft"].adapter_dir if "sft" in stages else None, resume)
    return orpo_stage(cfg, run_dir, out, resume)


def stage_result(outcome: TrainOutcome, eval: Figures | None = None, eval_loss: float | None = None) -> StageResult:
    result = StageResult.model_validate(asdict(outcome))
    if eval is None:
        return result
    return result.model_copy(update={"eval": eval, "eval_loss": eval_loss})


def evaluate_candidate(cfg: TrainConfig, run_dir: Path, out: Path, stages: Mapping[str, StageResult]) -> Evaluation:
    """The tuned model (the last stage's adapter) against its base on the held-out conversations:
    eval loss, ROUGE-L and BERTScore, the answers behind them (OUT/generations.json), and the GGUF
    export with its check, and its loss on each held-out row. Reuses the SFT stage's evaluation
    when SFT is the last stage."""
    last = stages[METHOD_STAGES[cfg.method][-1]]
    metrics: Figures = {}
    generations: list[dict] = []
    losses = None
    if cfg.eval.enabled and (run_dir / "export" / "hf" / "sft" / "test").is_dir():
        test = exported(run_dir, "sft", SFT_COLUMNS)[1]
        assert test is not None  # its folder was there
        if last.eval is not None and "eval_loss_after" in last.eval:
            metrics, generations = last.eval, read_generations(last.adapter_dir.parent)
        else:  # the base model's side is the SFT stage's, when there was one
            sft = stages.get("sft")
            baseline = None
            if sft is not None and sft.eval is not None:
                loss_before = sft.eval["eval_loss_before"]
                assert loss_before is not None  # an SFT evaluation always has both losses
                baseline = (float(loss_before), read_generations(sft.adapter_dir.parent))
            metrics, tuned = evaluate_sft(cfg, test, last.adapter_dir, baseline)
            generations = [asdict(g) for g in tuned]
        losses = row_losses(cfg, test, last.adapter_dir)
        references = [g["reference"] for g in generations]
        metrics = {
            **metrics,
            **{
                f"bertscore_{when}": bertscore([g[side] for g in generations], references)
                for when, side in (("before", "base"), ("after", "tuned"))
            },
        }
    gguf = None
    if cfg.export_gguf and last.merged_dir is not None:
        prompts = [g["prompt"] for g in generations]
        checked = export_and_verify(last.merged_dir, cfg.export_gguf, prompts, cfg.eval.max_new_tokens)
        gguf = GgufCheck.model_validate(checked)
    write_generations(out, generations)
    return Evaluation(metrics=metrics, generations=generations, gguf=gguf, row_losses=losses)


def write_generations(folder: Path, generations: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(generations, indent=1, ensure_ascii=False) + "\n"
    (folder / GENERATIONS).write_text(text, encoding="utf-8")


def read_generations(folder: Path) -> list[dict]:
    rows: list[dict] = json.loads((folder / GENERATIONS).read_text(encoding="utf-8"))
    return rows

