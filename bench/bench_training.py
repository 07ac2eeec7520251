"""Training throughput and memory on this CPU, and the GPU memory estimate for larger models.

    cd /work/main && .venv/bin/python -m bench.bench_training [--steps 4] [--rows 64]

CPU part: SFT and DPO steps of the bundled SmolLM2-135M-Instruct on real rows (GSM8K
conversations, Orca DPO pairs from ../shared/data), LoRA vs QLoRA (4-bit NF4), each in a
fresh process: non-padding tokens/s as counted by the trainer, and peak RSS growth during
training (bench.measure). GPU part: GPUs cannot be measured here, so the estimator's
predictions (training/hardware.py) for 0.5B-8B models are printed next to published figures.
Prints markdown tables; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import orjson

from bench.measure import in_fresh_process, measured

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# Llama-architecture shapes (hidden, layers, heads, kv heads, intermediate, vocab) of public
# models, for the estimator: no weights are read.
GPU_MODELS = {
    "Qwen2.5-0.5B-like": (896, 24, 14, 2, 4864, 151936),
    "Llama-3.2-1B-like": (2048, 16, 32, 8, 8192, 128256),
    "Llama-2-7B-like": (4096, 32, 32, 32, 11008, 32000),
    "Llama-3.1-8B-like": (4096, 32, 32, 8, 14336, 128256),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    runs = [
        in_fresh_process(_train, stage, quantization, args.steps, args.rows)
        for stage in ("sft", "dpo")
        for quantization in ("none", "4bit")
    ]
    estimates = _estimates()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps({"cpu": runs, "gpu_estimates": estimates}, indent=2))
    print("| stage | quantization | steps | tokens/s | train wall s | peak RSS growth MB |")
    print("|---|---|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['stage']} | {r['quantization']} | {r['steps']} | {r['tokens_per_second']:.0f} |"
            f" {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    print("\n| model | LoRA bf16 GB | QLoRA 4-bit GB |  (r=16, seq 512, batch 1, checkpointing)")
    print("|---|---:|---:|")
    for name, (lora, qlora) in estimates.items():
        print(f"| {name} | {lora:.1f} | {qlora:.1f} |")


def _train(stage: str, quantization: str, steps: int, rows: int) -> dict:
    from datasets import Dataset

    from schemas.train import TrainConfig
    from training.dpo import train_dpo
    from training.sft import train_sft

    section = {"max_steps": steps, "batch_size": 2, "grad_accum": 1, "logging_steps": 1, "save_steps": 1000}
    cfg = TrainConfig(
        method="sft" if stage == "sft" else "dpo",
        quantization=quantization,
        max_seq_length=512,
        report_to=[],
        **{stage: section},
    )
    data = Dataset.from_list(_sft_rows(rows) if stage == "sft" else _pairs(rows))
    with tempfile.TemporaryDirectory() as out:
        if stage == "sft":
            run = lambda: train_sft(cfg, data, None, Path(out), resume=False)  # noqa: E731
        else:
            run = lambda: train_dpo(cfg, data, None, None, Path(out), resume=False)  # noqa: E731
        outcome, seconds, _, memory = measured(run)
    return {
        "stage": stage,
        "quantization": quantization,
        "steps": outcome.steps,
        "tokens_per_second": outcome.tokens_per_second,
        "seconds": seconds,
        "peak_rss_mb": memory,
    }


def _sft_rows(n: int) -> list[dict]:
    lines = (SHARED / "sft" / "gsm8k_test.jsonl").read_bytes().splitlines()[:n]
    rows = [orjson.loads(line) for line in lines]
    return [
        {"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
        for r in rows
    ]


def _pairs(n: int) -> list[dict]:
    lines = (SHARED / "pref" / "orca_dpo_pairs_validation_283.jsonl").read_bytes().splitlines()[:n]
    rows = [orjson.loads(line) for line in lines]
    return [
        {
            "prompt": r["input"]["messages"],
            "chosen": r["preferred_output"],
            "rejected": r["non_preferred_output"],
        }
        for r in rows
    ]


def _estimates() -> dict[str, tuple[float, float]]:
    from peft import LoraConfig
    from transformers import LlamaConfig

    from training.hardware import estimate_gpu_memory_gb, model_shape

    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    out = {}
    for name, (hidden, layers, heads, kv, inter, vocab) in GPU_MODELS.items():
        config = LlamaConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            intermediate_size=inter,
            vocab_size=vocab,
        )
        shape = model_shape(config, lora)
        full, four_bit = (estimate_gpu_memory_gb(shape, q, seq_len=512, batch=1, grad_checkpointing=True)["total"]
                          for q in ("none", "4bit"))
        out[name] = (full, four_bit)
    return out


if __name__ == "__main__":
    main()
