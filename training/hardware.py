"""Where training runs (CUDA or CPU, which precision) and whether it fits in GPU memory.

The estimate is computed before any weight is loaded, from the model's config on PyTorch's
meta device, so a run that cannot fit stops with one message instead of an out-of-memory
error minutes in. It is an approximation (see `estimate_gpu_memory_gb`) that errs high.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from peft import PeftConfig, get_peft_model
from transformers import AutoModelForCausalLM, PretrainedConfig

from schemas.train import Quantization, TrainingInputError

GB = 1e9
# CUDA context, cuBLAS workspaces, kernels and allocator fragmentation: measured at 0.5-1 GB on
# current drivers; the high end, so the check errs on the side of refusing.
CUDA_OVERHEAD_GB = 1.0
# NF4 stores 4 bits per weight plus one 8-bit absmax per 64-weight block, itself quantised with
# one fp32 constant per 256 blocks (double quantisation): 0.5 + 1/64 + 4/(64*256) bytes.
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)


@dataclass(frozen=True)
class Device:
    kind: Literal["cuda", "cpu"]
    name: str
    memory_gb: float | None  # total GPU memory; None on CPU
    bf16: bool  # CUDA with bfloat16 support (Ampere or newer)

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype: bf16 where supported, fp16 on older CUDA, fp32 on CPU."""
        if self.kind == "cpu":
            return torch.float32
        return torch.bfloat16 if self.bf16 else torch.float16


def detect_device() -> Device:
    """The first visible CUDA GPU, else the CPU."""
    if not torch.cuda.is_available():
        return Device("cpu", "cpu", None, bf16=False)
    props = torch.cuda.get_device_properties(0)
    return Device("cuda", props.name, props.total_memory / GB, bf16=torch.cuda.is_bf16_supported())


@dataclass(frozen=True)
class ModelShape:
    """The figures of a causal LM the memory estimate needs."""

    n_params: int
    n_block_linear_params: int  # linear layers except the LM head: what NF4 quantises
    n_lora_params: int  # trainable adapter parameters (LoRA, or prompt tuning's virtual tokens)
    n_layers: int
    hidden_size: int
    n_heads: int
    vocab_size: int


def model_shape(config: PretrainedConfig, adapter: PeftConfig) -> ModelShape:
    """Count parameters on the meta device: no memory, no weights read."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    linear = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head
    )
    n_params = model.num_parameters()
    n_lora, _ = get_peft_model(model, adapter).get_nb_trainable_parameters()
    text = config.get_text_config()
    return ModelShape(
        n_params=n_params,
        n_block_linear_params=linear,
        n_lora_params=n_lora,
        n_layers=text.num_hidden_layers,
        hidden_size=text.hidden_size,
        n_heads=text.num_attention_heads,
        vocab_size=text.vocab_size,
    )


def estimate_gpu_memory_gb(
    shape: ModelShape, quantization: Quantization, seq_len: int, batch: int, grad_checkpointing: bool
) -> dict[str, float]:
    """Peak GPU memory of LoRA / QLoRA training, in GB (1e9 bytes), by component.

    - weights: 2 bytes/param (bf16/fp16). With NF4 the block linear layers take
      `NF4_BYTES_PER_PARAM`; the rest (embeddings, LM head, norms) is upcast to fp32 by peft's
      `prepare_model_for_kbit_training`, so 4 bytes/param.
    - lora: 16 bytes per trainable parameter: fp32 weight, gradient and two Adam moments (8-bit
      paged Adam needs less; this is the upper bound).
    - activations, in 16 bit, after Korthikanti et al. 2022 ("Reducing Activation Recomputation
      in Large Transformer Models"): one layer keeps s*b*h*(34 + 5*a*s/h) bytes. Without
      checkpointing every layer keeps that; with it, each layer keeps only its 2*s*b*h-byte input
      and one layer's full set is rebuilt during the backward pass. LoRA's own activations
      (r values per token and module) are negligible. Plus the logits, b*s*V fp32 values (TRL's
      fused LM head tiles them, so this is an upper bound).
    - cuda_overhead: `CUDA_OVERHEAD_GB`.
    `batch` counts sequences per forward pass: DPO and ORPO pass chosen and rejected together,
    so their callers double it.
    """
    s, b, h, a = seq_len, batch, shape.hidden_size, shape.n_heads
    if quantization == "4bit":
        rest = shape.n_params - shape.n_block_linear_params
        weights = shape.n_block_linear_params * NF4_BYTES_PER_PARAM + rest * 4
    else:
        weights = shape.n_params * 2
    per_layer = s * b * h * (34 + 5 * a * s / h)
    if grad_checkpointing:
        activations = shape.n_layers * 2 * s * b * h + per_layer
    else:
        activations = shape.n_layers * per_layer
    parts = {
        "weights": weights / GB,
        "lora": shape.n_lora_params * 16 / GB,
        "activations": activations / GB,
        "logits": b * s * shape.vocab_size * 4 / GB,
        "cuda_overhead": CUDA_OVERHEAD_GB,
    }
    return {**{k: round(v, 3) for k, v in parts.items()}, "total": round(sum(parts.values()), 2)}


def memory_report(estimate: dict[str, float], device: Device) -> str:
    """Refuse a run whose estimate exceeds the GPU; on CPU the estimate is information only."""
    figures = ", ".join(f"{k} {v:g}" for k, v in estimate.items() if k != "total")
    line = f"estimated peak GPU memory {estimate['total']:g} GB ({figures})"
    if device.kind == "cuda" and device.memory_gb is not None and estimate["total"] > device.memory_gb:
        raise TrainingInputError(
            f"{line} exceeds the {device.memory_gb:.1f} GB of {device.name}: lower batch_size or"
            " max_seq_length, keep gradient_checkpointing on, or set quantization: 4bit"
        )
    return line if device.kind == "cuda" else f"{line}; training on CPU, so for information only"
