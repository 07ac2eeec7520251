"""What the SFT, DPO and ORPO stages share: input checks, trainer arguments, the run itself.

A stage's output directory holds the trainer's checkpoints (`checkpoint-N`, resumable), the
final adapter with its tokenizer (`adapter/`) and, when asked for on the method's last stage,
base + adapter merged (`merged/`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from peft import LoraConfig, PeftConfig, PromptTuningConfig, PromptTuningInit
from transformers import (
    AutoConfig,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint
from trl.data_utils import is_conversational

from schemas.train import METHOD_STAGES, Lora, Stage, TrainConfig, TrainingInputError
from training.base_model import load_base_model, load_training_tokenizer, merge_adapter, resolve_base_model
from training.hardware import Device, estimate_gpu_memory_gb, memory_report, model_shape

Messages = list[dict[str, str]]

# (optimizer steps done, max steps), for a caller's progress display (the flows set it).
TRAIN_PROGRESS: ContextVar[Callable[[int, int], None] | None] = ContextVar("train_progress", default=None)


@dataclass(frozen=True)
class TrainOutcome:
    stage: str  # sft | dpo | orpo
    steps: int  # optimizer steps reached, counting those of a resumed checkpoint
    train_loss: float | None  # last logged training loss (this stage's objective)
    eval_loss: float | None  # at the last evaluation; None without one
    tokens_per_second: float | None  # non-padding input tokens in this session; None if not counted
    train_rows: int  # train rows offered (SFT on a plain template: answers, one row each)
    dropped_rows: int  # of those, left out by the length check
    resumed_from: Path | None  # the checkpoint this session started from
    adapter_dir: Path
    merged_dir: Path | None


def lora_config(lora: Lora) -> LoraConfig:
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def peft_config(cfg: TrainConfig, base_dir: Path) -> PeftConfig:
    """What trains: a LoRA adapter, or (method prompt_tuning) virtual tokens initialised from
    the embeddings of `prompt_tuning.init_text` as the base model's tokenizer splits it."""
    if cfg.method != "prompt_tuning":
        return lora_config(cfg.lora)
    return PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=cfg.prompt_tuning.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text=cfg.prompt_tuning.init_text,
        tokenizer_name_or_path=str(base_dir),
    )


def trainer_parts(cfg: TrainConfig, params: Stage, inputs: Inputs, device: Device) -> dict[str, Any]:
    """The keyword arguments every TRL trainer here takes: model, data, tokenizer, LoRA."""
    return {
        "model": load_base_model(inputs.base_dir, cfg.quantization, device, params.gradient_checkpointing),
        "train_dataset": inputs.train,
        "eval_dataset": inputs.eval,
        "processing_class": inputs.tokenizer,
        "peft_config": peft_config(cfg, inputs.base_dir),
    }


@dataclass(frozen=True)
class RowCounts:
    """A stage's train rows as offered to it, and how many of them did not fit max_seq_length."""

    offered: int
    dropped: int


@dataclass(frozen=True)
class Inputs:
    """A stage's checked inputs: the base model and the rows that will train."""

    base_dir: Path
    tokenizer: PreTrainedTokenizerBase
    train: Dataset
    eval: Dataset | None
    counts: RowCounts


def prepare_inputs(
    cfg: TrainConfig,
    stage: str,
    train: Dataset,
    eval: Dataset | None,
    columns: tuple[str, ...],
    parts: Callable[[dict[str, Any]], tuple[Messages, list[Messages]]],
    convert: Callable[[Dataset, PreTrainedTokenizerBase], Dataset] | None = None,
) -> Inputs:
    """Check columns, base model and chat template, then fit rows to max_seq_length; refuse a
    stage (its section named by `stage`) left with less than a batch, or that would lose more
    than `train.max_dropped` of its train rows.

    `parts` gives a row's prompt and its full conversation(s), for the length check; `convert`,
    if given, turns the checked columns into the trainer's rows first.
    """
    params: Stage = getattr(cfg, stage)
    for dataset, name in ((train, "train"), (eval, "eval")):
        if dataset is not None:
            _check_columns(dataset, name, columns)
    base_dir = resolve_base_model(cfg.base_model)
    tokenizer = load_training_tokenizer(base_dir, cfg.chat_template)

    def rows(dataset: Dataset, name: str, needed: int, why: str) -> tuple[Dataset, RowCounts]:
        converted = dataset.select_columns(list(columns))
        if convert is not None:
            converted = convert(converted, tokenizer)
        fitted = converted.filter(_fits(tokenizer, cfg, parts), desc="Fitting rows to max_seq_length")
        dropped = converted.num_rows - fitted.num_rows
        if fitted.num_rows < needed:
            after = f" after leaving out {dropped} that do not fit max_seq_length {cfg.max_seq_length}"
            raise TrainingInputError(
                f"{stage}: {name} dataset: {_rows(fitted.num_rows)}{after if dropped else ''}: {why}"
            )
        return fitted, RowCounts(converted.num_rows, dropped)

    train_rows, counts = rows(
        train, "train", params.batch_size, f"fewer than one batch (batch_size {params.batch_size})"
    )
    _check_dropped(cfg, stage, counts)
    if eval is not None and cfg.eval.max_rows is not None and eval.num_rows > cfg.eval.max_rows:
        eval = eval.select(range(cfg.eval.max_rows))  # export's test split is already shuffled
    eval_rows = rows(eval, "eval", 1, "nothing to evaluate on")[0] if eval is not None else None
    return Inputs(base_dir, tokenizer, train_rows, eval_rows, counts)


def _check_dropped(cfg: TrainConfig, stage: str, counts: RowCounts) -> None:
    """A stage that would silently train on a fraction of its set is refused: the set was
    exported for a longer max_seq_length than training now uses (or for another model)."""
    share = counts.dropped / counts.offered if counts.offered else 0.0
    if share <= cfg.max_dropped:
        return
    why = " (the prompt alone fills it: no answer token left to learn)" if cfg.truncation == "truncate" else ""
    raise TrainingInputError(
        f"{stage}: {counts.dropped} of {_rows(counts.offered)} of the train set ({share:.1%}) do not fit"
        f" train.max_seq_length {cfg.max_seq_length}{why}, more than train.max_dropped {cfg.max_dropped:g} allows:"
        " raise train.max_seq_length to the length the set was exported for, curate the set again with"
        " this config (export follows train.max_seq_length and rejects such rows as too_long), or raise"
        " train.max_dropped"
    )


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _check_columns(dataset: Dataset, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise TrainingInputError(
            f"{name} dataset: missing column(s) {', '.join(missing)} (has: {', '.join(dataset.column_names)})"
        )
    if len(dataset) and not is_conversational(dataset[0]):
        raise TrainingInputError(
            f"{name} dataset: {', '.join(columns)} must hold lists of {{role, content}} messages"
        )


def _fits(
    tokenizer: PreTrainedTokenizerBase,
    cfg: TrainConfig,
    parts: Callable[[dict[str, Any]], tuple[Messages, list[Messages]]],
) -> Callable[[dict[str, Any]], bool]:
    """Whether a row can train within max_seq_length.

    A prompt that fills the window leaves no answer token to learn from (DPO would compare
    empty answers, ORPO's loss turns NaN), so such rows go in both modes; with `truncation:
    drop` so does any row whose full conversation is too long (with `truncate`, TRL cuts it).
    """

    def length(messages: Messages, prompt: bool) -> int:
        return len(tokenizer.apply_chat_template(messages, add_generation_prompt=prompt, return_dict=False))

    def fits(row: dict[str, Any]) -> bool:
        prompt, full = parts(row)
        if length(prompt, prompt=True) >= cfg.max_seq_length:
            return False
        return cfg.truncation == "truncate" or all(
            length(m, prompt=False) <= cfg.max_seq_length for m in full
        )

    return fits


def preflight(cfg: TrainConfig, params: Stage, base_dir: Path, device: Device, pairs: bool) -> None:
    """Stop before loading weights when the run cannot fit the GPU; on CPU, say the estimate."""
    estimate = estimate_gpu_memory_gb(
        model_shape(AutoConfig.from_pretrained(base_dir, local_files_only=True), peft_config(cfg, base_dir)),
        cfg.quantization,
        seq_len=cfg.max_seq_length,
        batch=params.batch_size * (2 if pairs else 1),  # chosen and rejected share a forward pass
        grad_checkpointing=params.gradient_checkpointing,
    )
    print(memory_report(estimate, device))


def trainer_args(
    cfg: TrainConfig, params: Stage, output_dir: Path, device: Device, has_eval: bool
) -> dict[str, Any]:
    """The TrainingArguments fields every stage sets the same way (TRL configs subclass it)."""
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": params.epochs,
        "max_steps": params.max_steps,
        "learning_rate": params.learning_rate,
        "per_device_train_batch_size": params.batch_size,
        "per_device_eval_batch_size": params.batch_size,
        "gradient_accumulation_steps": params.grad_accum,
        "lr_scheduler_type": params.lr_scheduler,
        "warmup_steps": params.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "activation_checkpointing": params.gradient_checkpointing,  # transformers 5's name for it
        "logging_steps": params.logging_steps,
        "save_strategy": "steps",
        "save_steps": params.save_steps,
        "save_total_limit": 2,  # resuming needs only the last
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": params.save_steps,
        "seed": cfg.seed,
        "report_to": cfg.report_to or "none",
        "max_length": cfg.max_seq_length,
        "use_cpu": device.kind == "cpu",
        "bf16": device.bf16,
        "fp16": device.kind == "cuda" and not device.bf16,
        # 8-bit paged Adam is a bitsandbytes CUDA kernel; on CPU the default AdamW.
        **({"optim": "paged_adamw_8bit"} if device.kind == "cuda" else {}),
        "include_num_input_tokens_seen": "non_padding",
    }


class _Throughput(TrainerCallback):
    """Non-padding input tokens per second of this session (a resumed run counts only its own)."""

    tokens_per_second: float | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._tokens, self._start = state.num_input_tokens_seen, time.perf_counter()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        tokens = state.num_input_tokens_seen - self._tokens
        self.tokens_per_second = tokens / (time.perf_counter() - self._start) if tokens else None


class _Progress(TrainerCallback):
    def __init__(self, on_progress: Callable[[int, int], None]) -> None:
        self.on_progress = on_progress

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.on_progress(state.global_step, state.max_steps)


class _NoFinalEval(TrainerCallback):
    """Cancels any evaluation at the last step (the Trainer adds one there); earlier periodic
    evaluations stay."""

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if control.should_training_stop:
            control.should_evaluate = False


def run(
    trainer: Trainer,
    cfg: TrainConfig,
    stage: str,
    output_dir: Path,
    resume: bool,
    counts: RowCounts,
    final_eval: bool = True,
) -> TrainOutcome:
    """Train (from the last checkpoint when resuming), then save the adapter and maybe merge.
    `final_eval=False` when the caller evaluates the final weights itself on the same rows
    (the evaluation after training): the Trainer's own last pass would be the same numbers."""
    checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if checkpoint and not resume:
        # Starting over: old checkpoints would otherwise be mixed into a later resume.
        for old in output_dir.glob("checkpoint-*"):
            shutil.rmtree(old)
        checkpoint = None
    throughput = _Throughput()
    trainer.add_callback(throughput)
    if not final_eval:
        trainer.add_callback(_NoFinalEval)
    if (on_progress := TRAIN_PROGRESS.get()) is not None:
        trainer.add_callback(_Progress(on_progress))
    result = trainer.train(resume_from_checkpoint=checkpoint)

    adapter_dir = output_dir / "adapter"
    # Only the trained adapter: DPO keeps a frozen copy ("ref") as its reference model.
    trainer.model.save_pretrained(adapter_dir, selected_adapters=["default"])
    trainer.processing_class.save_pretrained(adapter_dir)
    merged_dir = None
    if (cfg.save_merged or cfg.export_gguf) and METHOD_STAGES[cfg.method][-1] == stage:
        base_dir = Path(trainer.model.peft_config["default"].base_model_name_or_path)
        merged_dir = merge_adapter(base_dir, adapter_dir, output_dir / "merged")

    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    return TrainOutcome(
        stage=stage,
        steps=trainer.state.global_step,
        train_loss=losses[-1] if losses else result.training_loss,
        eval_loss=evals[-1] if evals else None,
        tokens_per_second=throughput.tokens_per_second,
        train_rows=counts.offered,
        dropped_rows=counts.dropped,
        resumed_from=Path(checkpoint) if checkpoint else None,
        adapter_dir=adapter_dir,
        merged_dir=merged_dir,
    )
