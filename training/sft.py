"""Supervised fine-tuning with LoRA / QLoRA: a thin wrapper around TRL's SFTTrainer.

Input: a `datasets.Dataset` with a `messages` column (lists of {role, content}).

Loss on assistant tokens only (the default) takes one of two TRL routes, picked per chat
template:
- TRL's `assistant_only_loss` on the conversations as they are, when the template has
  `{% generation %}` markers or TRL ships a marked twin of it (`get_training_chat_template`).
  Every assistant turn is learned, in one sequence.
- Otherwise (SmolLM2's ChatML template is one), each assistant turn becomes a conversational
  prompt/completion row: `prompt` = the turns before it, `completion` = that turn, trained with
  `completion_only_loss`. TRL masks whatever the prompt renders to, so this works with any
  template whose rendered prompt is a prefix of the rendered conversation (TRL warns when not).
  A k-turn conversation becomes k rows; for the usual one-turn data that is the same cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer
from trl.chat_template_utils import get_training_chat_template

from schemas.train import TrainConfig
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

LossRoute = Literal["all_tokens", "assistant_masks", "completions"]


def loss_route(tokenizer: PreTrainedTokenizerBase, assistant_only_loss: bool) -> LossRoute:
    if not assistant_only_loss:
        return "all_tokens"
    try:
        get_training_chat_template(tokenizer)  # None = already marked; a string = TRL's marked twin
    except ValueError:
        return "completions"
    return "assistant_masks"


def split_turns(batch: dict[str, list[Any]]) -> dict[str, list[Messages]]:
    """One prompt/completion row per assistant turn (a batched `Dataset.map` function)."""
    prompts, completions = [], []
    for messages in batch["messages"]:
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                prompts.append(messages[:i])
                completions.append([message])
    return {"prompt": prompts, "completion": completions}


def _parts(row: dict[str, Any]) -> tuple[Messages, list[Messages]]:
    if "prompt" in row:
        return row["prompt"], [row["prompt"] + row["completion"]]
    messages = row["messages"]
    first_answer = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    return messages[:first_answer], [messages]


def sft_inputs(cfg: TrainConfig, train: Dataset, eval: Dataset | None) -> Inputs:
    """The SFT stage's checked rows, as the trainer will get them (one per answer on the
    completions route); raises TrainingInputError when they cannot train."""

    def convert(dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        if loss_route(tokenizer, cfg.sft.assistant_only_loss) != "completions":
            return dataset
        return dataset.map(split_turns, batched=True, remove_columns=["messages"], desc="One row per answer")

    return prepare_inputs(cfg, "sft", train, eval, ("messages",), _parts, convert)


def build_sft_trainer(
    cfg: TrainConfig, train: Dataset, eval: Dataset | None, output_dir: Path
) -> tuple[SFTTrainer, RowCounts]:
    """Check the inputs, then a ready SFTTrainer and its train rows offered and left out."""
    params = cfg.sft
    inputs = sft_inputs(cfg, train, eval)
    route = loss_route(inputs.tokenizer, params.assistant_only_loss)
    device = detect_device()
    preflight(cfg, params, inputs.base_dir, device, pairs=False)
    args = SFTConfig(
        **trainer_args(cfg, params, output_dir, device, has_eval=inputs.eval is not None),
        packing=params.packing,
        assistant_only_loss=route == "assistant_masks",
        completion_only_loss=route == "completions",
    )
    trainer = SFTTrainer(args=args, **trainer_parts(cfg, params, inputs, device))
    return trainer, inputs.counts


def train_sft(
    cfg: TrainConfig,
    train: Dataset,
    eval: Dataset | None,
    output_dir: Path,
    resume: bool = True,
    final_eval: bool = True,
) -> TrainOutcome:
    """LoRA SFT of `cfg.base_model` on conversations; adapter in `output_dir/adapter`.
    `final_eval=False`: no evaluation after the last step (the caller evaluates the adapter)."""
    trainer, counts = build_sft_trainer(cfg, train, eval, output_dir)
    return run(trainer, cfg, "sft", output_dir, resume, counts, final_eval)


if __name__ == "__main__":  # python -m training.sft CONFIG --data RUN_DIR (training/cli.py)
    import sys

    from training.cli import main

    sys.exit(main("sft"))
