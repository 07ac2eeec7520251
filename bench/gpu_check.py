"""QLoRA SFT and DPO on a CUDA GPU through the project's own training code, at ~0.5B, ~1B and ~7B.

    bash bench/gpu_check.sh            # or: python -m bench.gpu_check [--sizes 0.5B,1B,7B] [--steps 4]

Llama-shaped models are built from configs with random weights (fine for memory and speed),
using the bundled SmolLM2 tokenizer and chat template, and saved to a scratch directory. Each
then trains a few QLoRA SFT steps and DPO steps continuing that adapter with `train_sft` /
`train_dpo` as `curate train` runs them on CUDA: bf16, NF4 with double quantisation, gradient
checkpointing, paged 8-bit AdamW. Reported per size and stage: peak GPU memory allocated by
PyTorch (and reserved by its allocator) next to `training/hardware.py`'s estimate, and the
non-padding tokens/s the trainer counted. Prints a markdown table; writes JSON to --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

# Llama shapes (hidden, layers, heads, kv heads, intermediate, tied embeddings) sized with the
# bundled tokenizer's 49,152-token vocabulary to about the named parameter counts.
SHAPES: dict[str, tuple[int, int, int, int, int, bool]] = {
    "0.5B": (1024, 28, 16, 4, 4096, True),
    "1B": (2048, 16, 32, 8, 8192, True),  # Llama-3.2-1B's blocks
    "7B": (4096, 32, 32, 32, 11008, False),  # Llama-2-7B's blocks
}
SEQ_LEN = 512
SFT_BATCH = 4
DPO_BATCH = 2  # pairs: chosen and rejected go through together


def llama_config(size: str, vocab_size: int = 49152):  # noqa: ANN201 - transformers is imported lazily
    from transformers import LlamaConfig

    hidden, layers, heads, kv, intermediate, tied = SHAPES[size]
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=intermediate,
        max_position_embeddings=2048,
        tie_word_embeddings=tied,
    )


def train_config(model_dir: Path | str, steps: int):  # noqa: ANN201
    """The `train:` section these runs use: QLoRA, bf16 (picked by the device), checkpointing."""
    from schemas.train import TrainConfig

    common = {"max_steps": steps, "grad_accum": 1, "logging_steps": 1, "save_steps": 10_000, "warmup_ratio": 0}
    return TrainConfig(
        base_model=str(model_dir),
        method="sft_dpo",
        quantization="4bit",
        max_seq_length=SEQ_LEN,
        report_to=[],
        sft={**common, "batch_size": SFT_BATCH, "gradient_checkpointing": True},
        dpo={**common, "batch_size": DPO_BATCH, "gradient_checkpointing": True},
    )


def estimate(size: str, stage: str, steps: int = 1) -> dict[str, float]:
    """`training/hardware.py`'s estimate for this size and stage, as preflight computes it."""
    from training.common import peft_config
    from training.hardware import estimate_gpu_memory_gb, model_shape

    cfg = train_config("unused", steps)
    params = cfg.sft if stage == "sft" else cfg.dpo
    shape = model_shape(llama_config(size), peft_config(cfg, Path("unused")))
    batch = params.batch_size * (2 if stage == "dpo" else 1)
    return estimate_gpu_memory_gb(shape, cfg.quantization, SEQ_LEN, batch, params.gradient_checkpointing)


def _build(size: str, tokenizer_dir: Path, out: Path) -> tuple[Path, int]:
    """A random-weight bf16 model of `size` with the bundled tokenizer, saved to `out`."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = llama_config(size, len(tokenizer))
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    with torch.device("cuda"):
        # transformers declares PreTrainedModel.to with functools.wraps(Module.to): typeshed's wraps
        # keeps the unbound signature, so mypy takes the dtype for `self`.
        model = LlamaForCausalLM(config).to(torch.bfloat16)  # type: ignore[arg-type]
    n_params = model.num_parameters()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    _free()
    return out, n_params


def _free() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def _rows(n: int) -> tuple[list[dict], list[dict]]:
    """SFT conversations and preference pairs of a few hundred tokens each (content is irrelevant
    to memory and speed with random weights)."""
    answer = " ".join(f"Step {i}: add the next number to the running total and write it down." for i in range(24))
    question = "A shop sells pencils in boxes of twelve. How many pencils are in seven boxes and five loose ones?"
    sft = [
        {"messages": [{"role": "user", "content": f"{question} ({i})"}, {"role": "assistant", "content": answer}]}
        for i in range(n)
    ]
    pairs = [
        {
            "prompt": [{"role": "user", "content": f"{question} ({i})"}],
            "chosen": [{"role": "assistant", "content": answer}],
            "rejected": [{"role": "assistant", "content": answer[: len(answer) // 2]}],
        }
        for i in range(n)
    ]
    return sft, pairs


def run_size(size: str, steps: int, tokenizer_dir: Path, scratch: Path) -> list[dict]:
    import torch
    from datasets import Dataset

    from training.dpo import train_dpo
    from training.sft import train_sft

    start = time.perf_counter()
    model_dir, n_params = _build(size, tokenizer_dir, scratch / size)
    built = time.perf_counter() - start
    cfg = train_config(model_dir, steps)
    sft_rows, pairs = _rows(max(SFT_BATCH, DPO_BATCH) * steps)
    results = []
    adapter = None
    for stage in ("sft", "dpo"):
        _free()
        began = time.perf_counter()
        if stage == "sft":
            outcome = train_sft(cfg, Dataset.from_list(sft_rows), None, scratch / f"{size}-sft", resume=False)
            adapter = outcome.adapter_dir
        else:
            outcome = train_dpo(cfg, Dataset.from_list(pairs), None, adapter, scratch / f"{size}-dpo", resume=False)
        predicted = estimate(size, stage, steps)
        results.append(
            {
                "size": size,
                "params": n_params,
                "stage": stage,
                "steps": outcome.steps,
                "build_s": round(built, 1),
                "stage_s": round(time.perf_counter() - began, 1),
                "tokens_per_second": outcome.tokens_per_second,
                "peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
                "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2),
                "estimate_gb": predicted["total"],
                "estimate": predicted,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SHAPES))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu_check.json")
    args = parser.parse_args()
    import torch
    from transformers import AutoTokenizer

    from schemas.bundled import bundled_smollm2_gguf

    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU visible")
    device = torch.cuda.get_device_name(0)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        gguf = bundled_smollm2_gguf()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(scratch / "tokenizer")
        for size in args.sizes.split(","):
            results += run_size(size, args.steps, scratch / "tokenizer", scratch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device, "seq_len": SEQ_LEN, "results": results}, indent=2))
    print(f"\n{device}, QLoRA r=16 all-linear, seq {SEQ_LEN}, SFT batch {SFT_BATCH}, DPO batch {DPO_BATCH} pairs")
    print("| size | params | stage | steps | tokens/s | peak allocated GB | peak reserved GB | estimate GB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        tps = f"{r['tokens_per_second']:.0f}" if r["tokens_per_second"] else "-"
        print(
            f"| {r['size']} | {r['params'] / 1e9:.2f}B | {r['stage']} | {r['steps']} | {tps} |"
            f" {r['peak_allocated_gb']} | {r['peak_reserved_gb']} | {r['estimate_gb']} |"
        )


if __name__ == "__main__":
    main()
