"""Preference optimisation with LoRA / QLoRA: TRL's DPOTrainer, and ORPO.

Input: a `datasets.Dataset` in TRL's explicit conversational preference form: `prompt` (the
turns before the answer, ending with a user turn), `chosen` and `rejected` (the assistant
turn(s)).

DPO continues the SFT adapter, and the reference model is that SFT model: no second model is
loaded. Given a peft model that already carries an adapter and `ref_model=None`, TRL 1.16's
DPOTrainer adds a frozen copy of the adapter ("ref") to the same model and computes the
reference log-probs with it; only the "default" adapter trains and is saved. Without an SFT
adapter (method `dpo`), a fresh LoRA adapter trains and the reference is the base model with the
adapter switched off.

ORPO (method `orpo`) needs no SFT stage and no reference model: it adds an odds-ratio penalty
to the SFT loss on the chosen answer. TRL 1.16 keeps it in `trl.experimental.orpo`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedModel
from trl import DPOConfig, DPOTrainer

from schemas.train import TrainConfig, TrainingInputError
from training.common import (
    Inputs,
    Messages,
    RowCounts,
    TrainOutcome,
    preflight,
    prepare_inputs,
    run,
    trainer_args,
    trainer_parts,
)
from training.hardware import detect_device

COLUMNS = ("prompt", "chosen", "rejected")


def _parts(row: dict[str, Any]) -> tuple[Messages, list[Messages]]:
    return row["prompt"], [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]]


def _check_adapter(adapter_dir: Path, base_dir: Path) -> None:
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise TrainingInputError(f"SFT adapter: {adapter_dir} holds no adapter (no adapter_config.json)")
    recorded = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if recorded and Path(recorded).resolve() != base_dir.resolve():  # the bundled model's dir may be a symlink
        raise TrainingInputError(
            f"SFT adapter: {adapter_dir} was trained on {recorded}, not on the base model {base_dir};"
            " use the same train.base_model for both stages"
        )


def _with_adapter(model: PreTrainedModel, base_dir: Path, adapter_dir: Path) -> PeftModel:
    try:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    except (RuntimeError, ValueError) as exc:  # size mismatch, or target modules the base lacks
        lines = [line.strip() for line in str(exc).splitlines()]
        detail = next((line for line in lines if line.startswith("size mismatch")), lines[0])
        raise TrainingInputError(
            f"SFT adapter: {adapter_dir} does not fit the base model {base_dir}: {detail}"
        ) from None


def preference_inputs(cfg: TrainConfig, stage: str, train: Dataset, eval: Dataset | None) -> Inputs:
    """A DPO or ORPO stage's checked pairs; raises TrainingInputError when they cannot train."""
    return prepare_inputs(cfg, stage, train, eval, COLUMNS, _parts)


def build_dpo_trainer(
    cfg: TrainConfig, train: Dataset, eval: Dataset | None, sft_adapter_dir: Path | None, output_dir: Path
) -> tuple[DPOTrainer, RowCounts]:
    """Check the inputs, then a ready DPOTrainer and its train rows offered and left out."""
    params = cfg.dpo
    inputs = preference_inputs(cfg, "dpo", train, eval)
    if sft_adapter_dir is not None:
        _check_adapter(sft_adapter_dir, inputs.base_dir)
    device = detect_device()
    preflight(cfg, params, inputs.base_dir, device, pairs=True)
    parts = trainer_parts(cfg, params, inputs, device)
    if sft_adapter_dir is not None:  # continue the SFT adapter instead of starting a new one
        parts["model"] = _with_adapter(parts["model"], inputs.base_dir, sft_adapter_dir)
        parts["peft_config"] = None
    args = DPOConfig(
        **trainer_args(cfg, params, output_dir, device, has_eval=inputs.eval is not None), beta=params.beta
    )
    trainer = DPOTrainer(ref_model=None, args=args, **parts)
    return trainer, inputs.counts


def train_dpo(
    cfg: TrainConfig,
    train: Dataset,
    eval: Dataset | None,
    sft_adapter_dir: Path | None,
    output_dir: Path,
    resume: bool = True,
    final_eval: bool = True,
) -> TrainOutcome:
    """LoRA DPO continuing `sft_adapter_dir` (None: a fresh adapter on the base model).
    `final_eval=False`: no evaluation after the last step (the caller evaluates the adapter)."""
    trainer, counts = build_dpo_trainer(cfg, train, eval, sft_adapter_dir, output_dir)
    return run(trainer, cfg, "dpo", output_dir, resume, counts, final_eval)


def train_orpo(
    cfg: TrainConfig, train: Dataset, eval: Dataset | None, output_dir: Path, resume: bool = True
) -> TrainOutcome:
    """LoRA ORPO of the base model on preference pairs; adapter in `output_dir/adapter`."""
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():  # chosen knowingly: ORPO lives only in trl.experimental
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    params = cfg.orpo
    inputs = preference_inputs(cfg, "orpo", train, eval)
    device = detect_device()
    preflight(cfg, params, inputs.base_dir, device, pairs=True)
    args = ORPOConfig(
        **{
            **trainer_args(cfg, params, output_dir, device, has_eval=inputs.eval is not None),
            # ORPO's batches have no `input_ids` for the Trainer to count (it would warn every step).
            "include_num_input_tokens_seen": "no",
        },
        beta=params.beta,
    )
    trainer = ORPOTrainer(args=args, **trainer_parts(cfg, params, inputs, device))
    return run(trainer, cfg, "orpo", output_dir, resume, inputs.counts)


if __name__ == "__main__":  # python -m training.dpo CONFIG --data RUN_DIR (training/cli.py)
    import sys

    from training.cli import main

    sys.exit(main("dpo"))
