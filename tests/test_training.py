"""Training: LoRA / QLoRA SFT, DPO from the SFT adapter, ORPO, resume, merge, bad inputs, memory.

Models are tiny Llamas (hidden 64, 2 layers) built from a config, with the real SmolLM2
tokenizer and chat template (read from the bundled GGUF once, into the model cache), so runs take seconds on a CPU.
Data are real rows from tests/fixtures (GSM8K, Orca DPO pairs) in the trainers' formats.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict
from peft import PeftModel
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, Trainer

from schemas.bundled import bundled_smollm2_gguf, cache_dir, smollm2_dir, smollm2_tokenizer_dir
from schemas.config import format_errors
from schemas.train import METHOD_STAGES, TrainConfig, TrainingInputError
from schemas.train_result import CandidateResult, StageResult, TrainSummary
from training import hardware, sft
from training.candidates import summarize, train_candidate
from training.common import RowCounts, TrainOutcome, run
from training.dpo import build_dpo_trainer, preference_inputs, train_dpo, train_orpo
from training.gguf_export import export_and_verify, export_gguf
from training.hardware import Device, ModelShape, estimate_gpu_memory_gb, memory_report, model_shape
from training.leaderboard import rank
from training.sft import build_sft_trainer, loss_route, sft_inputs, train_sft

FAST = {
    "max_steps": 2,
    "batch_size": 2,
    "grad_accum": 1,
    "logging_steps": 1,
    "save_steps": 2,
    "warmup_ratio": 0,
}
PAIRS = {**FAST, "batch_size": 1}  # a pair is two sequences, and the reference adds a pass

# SmolLM2's template with {% generation %} around each answer and its end-of-turn token.
MARKED_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, '"
    "'trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# ---- models and data -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """The real SmolLM2 tokenizer as plain files (saved from the GGUF into the model cache once)."""
    return smollm2_tokenizer_dir()


def tiny_model(out: Path, tokenizer_dir: Path, hidden: int = 64, chat_template: str | None = None) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir)


def jsonl(path: Path, n: int) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(next(f)) for _ in range(n)]


def sft_data(shared: Path, n: int) -> Dataset:
    rows = jsonl(shared / "sft" / "gsm8k_test.jsonl", n)
    return Dataset.from_list(
        [
            {
                "messages": [
                    {"role": "user", "content": r["question"]},
                    {"role": "assistant", "content": r["answer"]},
                ]
            }
            for r in rows
        ]
    )


def pref_data(shared: Path, n: int) -> Dataset:
    """Orca DPO pairs (OpenAI preference shape) in TRL's explicit conversational form."""
    rows = jsonl(shared / "pref" / "orca_dpo_pairs_validation_283.jsonl", n)
    return Dataset.from_list(
        [
            {
                "prompt": r["input"]["messages"],
                "chosen": r["preferred_output"],
                "rejected": r["non_preferred_output"],
            }
            for r in rows
        ]
    )


def config(base: Path, method: str = "sft", **overrides: Any) -> TrainConfig:
    stages = METHOD_STAGES[method]
    data = {
        "base_model": str(base),
        "method": method,
        "report_to": [],
        "max_seq_length": 128,
        **({} if method == "prompt_tuning" else {"lora": {"r": 8, "alpha": 16}}),
        **{stage: dict(PAIRS if stage in ("dpo", "orpo") else FAST) for stage in stages},
    }
    return TrainConfig.model_validate({**data, **overrides})


def lora_b(model_or_file: torch.nn.Module | Path) -> dict[str, torch.Tensor]:
    """LoRA B matrices: peft starts them at zero, so any change shows as non-zero values."""
    tensors = load_file(model_or_file) if isinstance(model_or_file, Path) else model_or_file.state_dict()
    return {k: v.detach().clone().float() for k, v in tensors.items() if "lora_B" in k and ".ref." not in k}


def assert_trained(outcome: TrainOutcome, stage: str, steps: int) -> None:
    assert outcome.stage == stage and outcome.steps == steps
    assert outcome.train_loss is not None and math.isfinite(outcome.train_loss)
    assert (outcome.adapter_dir / "adapter_model.safetensors").is_file()
    assert (outcome.adapter_dir / "tokenizer.json").is_file()
    assert (outcome.adapter_dir / "chat_template.jinja").is_file()
    assert not (outcome.adapter_dir / "ref").exists()  # DPO's frozen reference copy is not saved


@pytest.fixture(scope="module")
def sft_run(base: Path, public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainOutcome:
    out = tmp_path_factory.mktemp("sft")
    return train_sft(config(base), sft_data(public_data, 4), sft_data(public_data, 2), out)


# ---- SFT ---------------------------------------------------------------------------------------


def test_without_final_eval_only_the_periodic_evaluations_run(base: Path, public_data: Path, tmp_path: Path) -> None:
    """The flow evaluates the final adapter itself: the Trainer's pass after the last step is left out."""
    cfg = config(base, sft={**FAST, "save_steps": 1})
    outcome = train_sft(cfg, sft_data(public_data, 4), sft_data(public_data, 2), tmp_path, final_eval=False)
    history = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "eval_loss" in h] == [1]
    assert outcome.eval_loss == next(h["eval_loss"] for h in history if "eval_loss" in h)


def test_sft_trains_the_lora_adapter(sft_run: TrainOutcome) -> None:
    assert_trained(sft_run, "sft", steps=2)
    assert sft_run.eval_loss is not None and math.isfinite(sft_run.eval_loss)
    assert sft_run.tokens_per_second and sft_run.tokens_per_second > 0
    assert (sft_run.train_rows, sft_run.dropped_rows) == (4, 0) and sft_run.merged_dir is None
    b = lora_b(sft_run.adapter_dir / "adapter_model.safetensors")
    assert b and all(v.abs().sum() > 0 for v in b.values())
    adapter = json.loads((sft_run.adapter_dir / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16
    adapted = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}  # all-linear, resolved
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def two_turns(shared: Path) -> Dataset:
    a, b = jsonl(shared / "sft" / "gsm8k_test.jsonl", 2)
    messages = [
        {"role": "user", "content": a["question"]},
        {"role": "assistant", "content": a["answer"]},
        {"role": "user", "content": b["question"]},
        {"role": "assistant", "content": b["answer"]},
    ]
    return Dataset.from_list([{"messages": messages}] * 2)


def learned_text(trainer: Trainer, row: int) -> tuple[str, str]:
    """(all tokens, tokens with a label) of one collated row, decoded."""
    batch = trainer.data_collator([trainer.train_dataset[row]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    decode = trainer.processing_class.decode
    return decode(ids), decode(ids[labels != -100])


def test_sft_loss_only_on_answers_with_a_plain_chatml_template(
    base: Path, public_data: Path, tmp_path: Path
) -> None:
    """SmolLM2's template has no generation markers: one prompt/completion row per answer."""
    cfg = config(base, max_seq_length=1024)
    conversations = two_turns(public_data)
    trainer, _ = build_sft_trainer(cfg, conversations, None, tmp_path)
    tokenizer = trainer.processing_class
    assert loss_route(tokenizer, True) == "completions"
    assert trainer.args.completion_only_loss and not trainer.args.assistant_only_loss
    assert len(trainer.train_dataset) == 4  # two conversations, two answers each

    turns = conversations[0]["messages"]
    rows = [trainer.train_dataset[i] for i in (0, 1)]  # the first and the second answer
    batch = trainer.data_collator(rows)  # one batch: the shorter row is padded
    for row, prompt, answer in ((0, turns[:1], turns[1]), (1, turns[:3], turns[3])):
        labels = batch["labels"][row]
        n_prompt = len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False))
        n_tokens = len(rows[row]["input_ids"])
        assert (labels[:n_prompt] == -100).all()  # system, user turns and earlier answers
        assert (labels[n_prompt:n_tokens] != -100).all()
        assert (labels[n_tokens:] == -100).all()  # padding
        assert tokenizer.decode(labels[n_prompt:n_tokens]) == answer["content"] + "<|im_end|>\n"


def test_sft_loss_only_on_answers_with_generation_markers(
    tokenizer_dir: Path, public_data: Path, tmp_path: Path
) -> None:
    """A template with {% generation %} takes TRL's assistant_only_loss route: whole conversations."""
    marked = tiny_model(tmp_path / "marked", tokenizer_dir, chat_template=MARKED_TEMPLATE)
    trainer, _ = build_sft_trainer(
        config(marked, max_seq_length=1024), two_turns(public_data), None, tmp_path / "out"
    )
    assert trainer.args.assistant_only_loss and not trainer.args.completion_only_loss
    assert len(trainer.train_dataset) == 2
    a, b = jsonl(public_data / "sft" / "gsm8k_test.jsonl", 2)
    text, learned = learned_text(trainer, 0)
    assert learned == a["answer"] + "<|im_end|>" + b["answer"] + "<|im_end|>"
    assert a["question"] in text and a["question"] not in learned and "system" not in learned


def test_full_loss_when_assistant_only_loss_is_off(base: Path, public_data: Path, tmp_path: Path) -> None:
    cfg = config(base, max_seq_length=1024, sft={**FAST, "assistant_only_loss": False})
    trainer, _ = build_sft_trainer(cfg, two_turns(public_data), None, tmp_path)
    text, learned = learned_text(trainer, 0)
    assert learned == text


def bnb_cpu_4bit() -> bool:
    try:
        import bitsandbytes.functional as F

        F.quantize_4bit(torch.randn(64, 64), quant_type="nf4")
        return True
    except Exception:
        return False


@pytest.mark.skipif(not bnb_cpu_4bit(), reason="this bitsandbytes build cannot quantise to NF4 on CPU")
def test_qlora_4bit_trains_on_cpu(base: Path, public_data: Path, tmp_path: Path) -> None:
    import bitsandbytes as bnb

    cfg = config(base, quantization="4bit")
    trainer, counts = build_sft_trainer(cfg, sft_data(public_data, 4), None, tmp_path)
    linear4 = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 14  # 7 projections x 2 layers, all NF4 with double quantisation
    assert linear4[0].weight.quant_state.quant_type == "nf4" and linear4[0].weight.quant_state.nested
    assert_trained(run(trainer, cfg, "sft", tmp_path, True, counts), "sft", steps=2)


@pytest.fixture(scope="module")
def resumed(base: Path, sft_run: TrainOutcome, public_data: Path) -> TrainOutcome:
    """The SFT run continued to step 3 from its checkpoint, saving a merged model at the end."""
    cfg = config(base, save_merged=True, sft={**FAST, "max_steps": 3})
    return train_sft(cfg, sft_data(public_data, 4), None, sft_run.adapter_dir.parent)


def test_resume_continues_from_the_last_checkpoint(resumed: TrainOutcome) -> None:
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "checkpoint-2"
    assert_trained(resumed, "sft", steps=3)
    assert (resumed.adapter_dir.parent / "checkpoint-3").is_dir()


def test_merged_model_loads_without_peft_and_matches_the_adapter(base: Path, resumed: TrainOutcome) -> None:
    assert resumed.merged_dir is not None
    merged = AutoModelForCausalLM.from_pretrained(resumed.merged_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), resumed.adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(resumed.merged_dir)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2?"}], return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, with_adapter(**ids).logits, atol=1e-4, rtol=1e-4)
    assert tokenizer.chat_template


# ---- DPO and ORPO ------------------------------------------------------------------------------


def test_dpo_continues_the_sft_adapter_against_itself(
    base: Path, sft_run: TrainOutcome, public_data: Path, tmp_path: Path
) -> None:
    cfg = config(base, method="sft_dpo", dpo={**PAIRS, "learning_rate": 1e-3})
    trainer, counts = build_dpo_trainer(cfg, pref_data(public_data, 2), None, sft_run.adapter_dir, tmp_path)
    # No second model: the reference is a frozen copy of the SFT adapter inside the same model.
    assert trainer.ref_model is None
    assert set(trainer.model.peft_config) == {"default", "ref"}
    assert not any(p.requires_grad for n, p in trainer.model.named_parameters() if ".ref." in n)
    sft_b = lora_b(sft_run.adapter_dir / "adapter_model.safetensors")
    start = lora_b(trainer.model)
    assert all(torch.equal(start[k.replace(".weight", ".default.weight")], v) for k, v in sft_b.items())

    outcome = run(trainer, cfg, "dpo", tmp_path, True, counts)
    assert_trained(outcome, "dpo", steps=2)
    assert outcome.tokens_per_second and outcome.tokens_per_second > 0
    first = next(h for h in trainer.state.log_history if "rewards/margins" in h)
    assert first["rewards/chosen"] == 0 and first["rewards/rejected"] == 0  # policy == reference at the start
    end = lora_b(outcome.adapter_dir / "adapter_model.safetensors")
    assert any(not torch.equal(end[k], v) for k, v in sft_b.items())


def test_dpo_without_sft_adapter_trains_a_fresh_adapter(
    base: Path, public_data: Path, tmp_path: Path
) -> None:
    stale = tmp_path / "checkpoint-9"  # from an earlier run; resume=False must start over
    stale.mkdir()
    outcome = train_dpo(
        config(base, method="dpo"), pref_data(public_data, 2), None, None, tmp_path, resume=False
    )
    assert_trained(outcome, "dpo", steps=2)
    assert outcome.resumed_from is None and not stale.exists()


def test_orpo_trains_from_the_base_model(base: Path, public_data: Path, tmp_path: Path) -> None:
    outcome = train_orpo(
        config(base, method="orpo"), pref_data(public_data, 2), pref_data(public_data, 1), tmp_path
    )
    assert_trained(outcome, "orpo", steps=2)
    assert outcome.eval_loss is not None and math.isfinite(outcome.eval_loss)
    assert outcome.tokens_per_second is None  # ORPO batches carry no input_ids to count
    b = lora_b(outcome.adapter_dir / "adapter_model.safetensors")
    assert b and all(v.abs().sum() > 0 for v in b.values())


# ---- bad inputs stop before training -----------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(Trainer, "train", refuse)


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "sft: train dataset: 0 rows: fewer than one batch (batch_size 2)"),
        (
            [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}],
            "sft: train dataset: 1 row: fewer than one batch (batch_size 2)",
        ),
        ([{"text": "hello"}] * 4, "train dataset: missing column(s) messages (has: text)"),
        ([{"messages": "hello"}] * 4, "must hold lists of {role, content} messages"),
    ],
)
def test_bad_sft_data(base: Path, tmp_path: Path, rows: list[dict], message: str) -> None:
    data = Dataset.from_list(rows) if rows else Dataset.from_dict({"messages": []})
    with pytest.raises(TrainingInputError, match=re.escape(message)):
        train_sft(config(base), data, None, tmp_path)


@pytest.mark.usefixtures("no_training")
def test_rows_that_do_not_fit_are_dropped_or_refused(base: Path, public_data: Path, tmp_path: Path) -> None:
    cfg = config(base, truncation="drop", max_seq_length=64)  # every GSM8K row is longer
    with pytest.raises(
        TrainingInputError,
        match="sft: train dataset: 0 rows after leaving out 4 that do not fit max_seq_length 64: fewer than one",
    ):
        train_sft(cfg, sft_data(public_data, 4), None, tmp_path)
    cfg = config(base, method="dpo", max_seq_length=40)  # Orca prompts alone fill 40 tokens
    with pytest.raises(TrainingInputError, match="0 rows after leaving out 4"):
        train_dpo(cfg, pref_data(public_data, 4), None, None, tmp_path)


@pytest.mark.usefixtures("no_training")
def test_a_stage_that_would_lose_more_than_max_dropped_is_refused(public_data: Path, tmp_path: Path) -> None:
    """Counted with the bundled model's tokenizer before any weights load (fast, no `base`)."""
    bundled = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(bundled)
    data = sft_data(public_data, 10)
    lengths = sorted(len(tokenizer.apply_chat_template(m, return_dict=False)) for m in data["messages"])
    limit = lengths[-3]
    assert limit < lengths[-2]  # exactly the two longest conversations are over it
    with pytest.raises(TrainingInputError) as refused:
        train_sft(config(bundled, truncation="drop", max_seq_length=limit), data, None, tmp_path)
    assert str(refused.value).startswith(
        f"sft: 2 of 10 rows of the train set (20.0%) do not fit train.max_seq_length {limit},"
        " more than train.max_dropped 0.1 allows: raise train.max_seq_length"
    )
    assert str(refused.value).endswith("or raise train.max_dropped")
    allowed = sft_inputs(config(bundled, truncation="drop", max_seq_length=limit, max_dropped=0.2), data, None)
    assert allowed.counts == RowCounts(offered=10, dropped=2) and allowed.train.num_rows == 8
    # DPO (truncation: truncate): a pair goes only when its prompt alone fills the window.
    pairs, limit = pref_data(public_data, 4), 200
    prompts = [len(tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=False)) for p in pairs["prompt"]]
    assert sum(n >= limit for n in prompts) == 1
    with pytest.raises(TrainingInputError, match=re.escape(
        f"dpo: 1 of 4 rows of the train set (25.0%) do not fit train.max_seq_length {limit} (the prompt alone fills it"
    )):
        train_dpo(config(bundled, method="dpo", max_seq_length=limit), pairs, None, None, tmp_path)
    allowed = preference_inputs(config(bundled, method="dpo", max_seq_length=limit, max_dropped=0.25), "dpo", pairs, None)
    assert allowed.counts == RowCounts(offered=4, dropped=1)


@pytest.mark.usefixtures("no_training")
def test_bad_base_models(tokenizer_dir: Path, public_data: Path, tmp_path: Path) -> None:
    data = sft_data(public_data, 4)
    with pytest.raises(TrainingInputError, match=r"base_model: .*/nowhere does not exist"):
        train_sft(config(tmp_path / "nowhere"), data, None, tmp_path / "out")
    with pytest.raises(TrainingInputError, match="is not a model directory"):
        train_sft(config(tokenizer_dir), data, None, tmp_path / "out")
    bare = tiny_model(tmp_path / "bare", tokenizer_dir)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(TrainingInputError, match="has no chat template"):
        train_sft(config(bare), data, None, tmp_path / "out")


@pytest.mark.usefixtures("no_training")
def test_adapter_base_mismatch(
    base: Path, sft_run: TrainOutcome, tokenizer_dir: Path, public_data: Path, tmp_path: Path
) -> None:
    data, cfg = pref_data(public_data, 2), config(base, method="sft_dpo")  # pairs that fit max_seq_length
    with pytest.raises(TrainingInputError, match="holds no adapter"):
        train_dpo(cfg, data, None, tmp_path, tmp_path / "out")
    wider = tiny_model(tmp_path / "wider", tokenizer_dir, hidden=128)
    with pytest.raises(TrainingInputError, match=f"was trained on {base}, not on the base model {wider}"):
        train_dpo(config(wider, method="sft_dpo"), data, None, sft_run.adapter_dir, tmp_path / "out")
    # Same recorded path, different shapes (the base directory was replaced).
    moved = tmp_path / "moved-adapter"
    moved.mkdir()
    for f in sft_run.adapter_dir.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    adapter_config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(
        json.dumps({**adapter_config, "base_model_name_or_path": str(wider)})
    )
    with pytest.raises(TrainingInputError, match=r"does not fit the base model .*size mismatch"):
        train_dpo(config(wider, method="sft_dpo"), data, None, moved, tmp_path / "out")


@pytest.mark.usefixtures("no_training")
def test_run_that_cannot_fit_the_gpu_is_refused(
    base: Path, public_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sft, "detect_device", lambda: Device("cuda", "Tiny GPU", 0.5, bf16=True))
    with pytest.raises(TrainingInputError, match=r"exceeds the 0.5 GB of Tiny GPU: lower batch_size"):
        train_sft(config(base), sft_data(public_data, 4), None, tmp_path)


# ---- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"method": "sft", "dpo": {"beta": 0.2}},
            "(top level): a 'dpo' section is set but method 'sft' runs only sft",
        ),
        ({"method": "sft_dpo", "orpo": {}}, "method 'sft_dpo' runs only sft + dpo"),
        ({"sft": {"max_steps": 0}}, "sft: max_steps is 0"),
        ({"sft": {"lr": 1e-4}}, "sft.lr: unknown key"),
        ({"lora": {"target_modules": []}}, "lora: target_modules is empty"),
        ({"lora": {"target_modules": ["q_proj", "lm_head"]}}, "lora: the LM head cannot take an adapter"),
        ({"quantization": "8bit"}, "quantization: Input should be 'none' or '4bit'"),
        ({"dpo": {"beta": 0}}, "dpo.beta: Input should be greater than 0"),
        ({"truncation": "cut"}, "truncation: Input should be 'truncate' or 'drop'"),
        ({"max_dropped": 1.5}, "max_dropped: Input should be less than or equal to 1"),
        ({"prompt_tuning": {"num_virtual_tokens": 4}}, "a 'prompt_tuning' section is set but method is 'sft_dpo'"),
        ({"method": "prompt_tuning", "lora": {"r": 4}}, "method 'prompt_tuning' trains no LoRA adapter"),
        ({"method": "prompt_tuning", "save_merged": True}, "cannot be merged into the weights"),
    ],
)
def test_config_errors_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        TrainConfig.model_validate({"report_to": [], **data})
    assert message in format_errors(exc.value)


def test_config_defaults() -> None:
    cfg = TrainConfig(report_to=[])
    assert (cfg.method, cfg.quantization, cfg.max_seq_length, cfg.truncation, cfg.max_dropped) == (
        "sft_dpo",
        "none",
        1024,
        "truncate",
        0.1,
    )
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules) == (
        16,
        32,
        0.05,
        "all-linear",
    )
    assert (cfg.sft.learning_rate, cfg.sft.assistant_only_loss, cfg.sft.packing) == (2e-4, True, False)
    assert (cfg.dpo.beta, cfg.dpo.learning_rate, cfg.seed) == (0.1, 5e-6, 42)
    if importlib.util.find_spec("tensorboard"):
        assert TrainConfig().report_to == ["tensorboard"]
    else:  # the default logger must be installed: said at validation, not minutes into a run
        with pytest.raises(ValidationError, match="'tensorboard' is not installed: pip install tensorboard"):
            TrainConfig()


# ---- memory estimate ---------------------------------------------------------------------------

LLAMA2_7B = LlamaConfig(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    tie_word_embeddings=False,
)


def test_memory_estimate_for_a_7b_qlora_matches_the_published_figure() -> None:
    """QLoRA on a 7B model, r=16, seq 512, batch 1, checkpointing: about 6 GB in practice."""
    # Counts as model_shape gives them for Llama-2-7B (checked against the real config below).
    shape = ModelShape(
        n_params=6_738_415_616,
        n_block_linear_params=6_476_005_376,
        n_lora_params=39_976_960,
        n_layers=32,
        hidden_size=4096,
        n_heads=32,
        vocab_size=32000,
    )
    qlora = estimate_gpu_memory_gb(shape, "4bit", seq_len=512, batch=1, grad_checkpointing=True)
    assert 5 <= qlora["total"] <= 7
    assert 3.3 < qlora["weights"] < 4.5 and 0.5 < qlora["lora"] < 0.7
    assert qlora["total"] == pytest.approx(sum(v for k, v in qlora.items() if k != "total"), abs=0.01)
    lora = estimate_gpu_memory_gb(shape, "none", seq_len=512, batch=1, grad_checkpointing=True)
    assert 13 < lora["weights"] < 14  # 2 bytes per parameter
    no_ckpt = estimate_gpu_memory_gb(shape, "4bit", seq_len=512, batch=1, grad_checkpointing=False)
    assert no_ckpt["activations"] > 10 * qlora["activations"]
    assert memory_report(qlora, Device("cuda", "T4", 15.8, bf16=False)).startswith(
        "estimated peak GPU memory 6."
    )
    with pytest.raises(TrainingInputError, match=r"exceeds the 12\.0 GB of RTX 3060: lower batch_size"):
        memory_report(lora, Device("cuda", "RTX 3060", 12.0, bf16=True))
    assert "for information only" in memory_report(lora, Device("cpu", "cpu", None, bf16=False))


def test_model_shape_counts_like_the_real_model(base: Path) -> None:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=8, target_modules="all-linear")
    real = AutoModelForCausalLM.from_pretrained(base)
    shape = model_shape(real.config, lora)
    assert shape.n_params == real.num_parameters()
    assert shape.n_lora_params == get_peft_model(real, lora).get_nb_trainable_parameters()[0]
    assert (shape.n_layers, shape.hidden_size, shape.n_heads) == (2, 64, 4)


def test_devices() -> None:
    assert Device("cuda", "A100", 80, bf16=True).dtype == torch.bfloat16
    assert Device("cuda", "T4", 15.8, bf16=False).dtype == torch.float16
    assert Device("cpu", "cpu", None, bf16=False).dtype == torch.float32
    device = hardware.detect_device()
    assert device.kind == ("cuda" if torch.cuda.is_available() else "cpu")


# ---- the bundled model -------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_model_converts_once_into_the_cache() -> None:
    """The conversion setup ran (or this test runs, on a machine without the cache): the cached
    checkpoint is SmolLM2-135M, answers like it, and asking again writes nothing; its tokenizer
    files tokenize and template exactly as the GGUF does."""
    model_dir, tokenizer_dir = smollm2_dir(), smollm2_tokenizer_dir()
    assert model_dir.parent == tokenizer_dir.parent == cache_dir() / "models"
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left
    files = (model_dir / "model.safetensors", tokenizer_dir / "tokenizer.json")
    mtimes = [f.stat().st_mtime_ns for f in files]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    gguf = bundled_smollm2_gguf()
    from_gguf = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    text = "Hello wörld <|im_start|>user\n 12345  \t and more"
    for saved in (tokenizer, AutoTokenizer.from_pretrained(tokenizer_dir)):
        assert saved(text)["input_ids"] == from_gguf(text)["input_ids"]
        assert saved.chat_template == from_gguf.chat_template and saved.pad_token == from_gguf.pad_token
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert 134e6 < model.num_parameters() < 136e6
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    answer = model.generate(**ids, max_new_tokens=12, do_sample=False)[0][ids["input_ids"].shape[1] :]
    assert "4" in tokenizer.decode(answer)
    assert smollm2_dir() == model_dir and smollm2_tokenizer_dir() == tokenizer_dir
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # neither written again


# ---- prompt tuning -----------------------------------------------------------------------------


def test_prompt_tuning_trains_the_virtual_tokens(base: Path, public_data: Path, tmp_path: Path) -> None:
    cfg = config(
        base,
        method="prompt_tuning",
        prompt_tuning={"num_virtual_tokens": 4, "init_text": "Solve the problem"},
        sft={**FAST, "learning_rate": 1e-1},
    )
    trainer, counts = build_sft_trainer(cfg, sft_data(public_data, 4), sft_data(public_data, 2), tmp_path)
    model = trainer.model
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt_encoder.default.embedding.weight"]
    start = model.prompt_encoder["default"].embedding.weight.detach().clone()
    # Text initialisation: the embeddings of the init text's tokens, cycled to fill the 4 slots.
    ids = trainer.processing_class("Solve the problem", add_special_tokens=False)["input_ids"]
    embed = model.get_input_embeddings().weight
    assert torch.equal(start, embed[[ids[i % len(ids)] for i in range(4)]].detach())

    outcome = run(trainer, cfg, "sft", tmp_path, True, counts)
    assert_trained(outcome, "sft", steps=2)
    assert outcome.eval_loss is not None and math.isfinite(outcome.eval_loss)
    saved = load_file(outcome.adapter_dir / "adapter_model.safetensors")
    assert list(saved) == ["prompt_embeddings"] and not torch.equal(saved["prompt_embeddings"], start)
    assert json.loads((outcome.adapter_dir / "adapter_config.json").read_text())["peft_type"] == "PROMPT_TUNING"


# ---- candidates and their ranking ----------------------------------------------------------------


def test_candidates_are_the_section_with_overrides_merged_in(base: Path) -> None:
    cfg = config(
        base,
        candidates=[
            {"name": "control", "sft": {"learning_rate": 0}},
            {"name": "soft-prompt", "method": "prompt_tuning", "lora": None},
        ],
        select_by=["rouge_l", "eval_loss"],
    )
    assert cfg.candidates and cfg.select_by == ["rouge_l", "eval_loss"]
    control = cfg.candidate_configs()["control"]
    # Nested sections merge key by key: the section's other sft settings stay.
    assert control.sft.learning_rate == 0 and control.sft.max_steps == FAST["max_steps"]
    assert control.lora.r == 8 and control.base_model == str(base) and not control.candidates
    with pytest.raises(ValidationError, match=r"candidates\[1\] \(soft-prompt\): .*trains no LoRA adapter"):
        config(base, candidates=[{"name": "a"}, {"name": "soft-prompt", "method": "prompt_tuning"}])
    with pytest.raises(ValidationError, match=r"candidates\[0\] \(a\): sft.batch_size: Input should be greater"):
        config(base, candidates=[{"name": "a", "sft": {"batch_size": 0}}])
    with pytest.raises(ValidationError, match=r"candidates\[1\]: the name 'a' is taken"):
        config(base, candidates=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValidationError, match=r"candidates\[0\]: needs a `name`"):
        config(base, candidates=[{"sft": {"learning_rate": 1e-3}}])
    assert list(config(base).candidate_configs()) == ["main"]


def test_rank_by_the_first_metric_then_the_tie_breakers() -> None:
    metrics = {
        "control": {"eval_loss": 9.1, "rouge_l": 0.2, "win_rate": None},
        "a": {"eval_loss": 4.0, "rouge_l": 0.3, "win_rate": 0.5},
        "b": {"eval_loss": 4.00001, "rouge_l": 0.4, "win_rate": 0.75},
        "c": {"eval_loss": None, "rouge_l": 0.9, "win_rate": 0.9},
    }
    assert rank(metrics, ["eval_loss", "rouge_l"]) == ["b", "a", "control", "c"]  # a, b tie on loss
    assert rank(metrics, ["win_rate"]) == ["c", "b", "a", "control"]  # higher is better; none last
    assert rank({"x": {"rouge_l": 0.5}, "y": {"rouge_l": 0.5}}, ["rouge_l"]) == ["x", "y"]  # config order


# ---- GGUF export -------------------------------------------------------------------------------


@pytest.mark.slow  # transformers reads a GGUF file with a 49k-token vocabulary in ~20 s on 2 cores
def test_gguf_export_loads_back_and_generates_like_the_merged_model(resumed: TrainOutcome) -> None:
    merged = resumed.merged_dir
    assert merged is not None
    prompts = [[{"role": "user", "content": q}] for q in ("2+2?", "Name a colour.", "Why is the sky blue?")]
    f16 = export_and_verify(merged, "f16", prompts, max_new_tokens=12)
    assert Path(f16["file"]).name == "model-f16.gguf" and f16["prompts"] == 3
    assert f16["identical_generations"] == 3 and f16["token_agreement"] == 1.0
    # Tensor for tensor, the file holds exactly the merged weights rounded to half precision
    # (query and key projections permuted for llama.cpp, and back by transformers).
    assert f16["max_weight_diff"] == 0 and f16["max_logit_diff"] < 1e-2
    tokenizer = AutoTokenizer.from_pretrained(merged.parent, gguf_file="model-f16.gguf")
    text = "Hello wörld <|im_start|>user\n 12345"
    assert tokenizer(text)["input_ids"] == AutoTokenizer.from_pretrained(merged)(text)["input_ids"]
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(merged).chat_template

    q8 = export_and_verify(merged, "q8_0", prompts, max_new_tokens=12)
    assert q8["bytes"] < f16["bytes"] and 0 < q8["max_weight_diff"] < 0.01 and q8["max_logit_diff"] < 0.05
    assert q8["token_agreement"] >= 0.9


def test_gguf_export_refuses_other_architectures(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(TrainingInputError, match="handles Llama-shaped models"):
        export_gguf(tmp_path, tmp_path / "x.gguf", "f16")


def test_gpu_check_builds_the_three_sizes_and_estimates_them() -> None:
    """bench/gpu_check.py's CPU parts: its model configs have the sizes it names, and the
    estimate it prints beside the measured peak is preflight's (the real run needs CUDA)."""
    from bench import gpu_check

    counts = {}
    for size in gpu_check.SHAPES:
        with torch.device("meta"):
            counts[size] = AutoModelForCausalLM.from_config(gpu_check.llama_config(size)).num_parameters()
    assert 0.4e9 < counts["0.5B"] < 0.6e9 and 0.9e9 < counts["1B"] < 1.2e9 and 6.5e9 < counts["7B"] < 7.2e9
    cfg = gpu_check.train_config("unused", steps=4)
    assert (cfg.quantization, cfg.sft.gradient_checkpointing, cfg.dpo.gradient_checkpointing) == ("4bit", True, True)
    seven = gpu_check.estimate("7B", "sft")
    assert 4 < seven["weights"] < 5 and seven["total"] < 139  # NF4 weights; fits one H200
    assert gpu_check.estimate("0.5B", "dpo")["total"] < seven["total"]


# ---- training without Prefect: the entries and the candidate orchestration ------------------------


def exported_sft(run: Path, public_data: Path) -> Path:
    """A curated run's exported SFT set as `curate run` writes it: 4 GSM8K conversations, 2 held out."""
    DatasetDict({"train": sft_data(public_data, 4), "test": sft_data(public_data, 2)}).save_to_disk(
        str(run / "export" / "hf" / "sft")
    )
    return run


def test_python_m_training_sft_trains_evaluates_and_writes_its_result(
    base: Path, public_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m training.sft CONFIG --data RUN_DIR` trains where the train flow would, without
    Prefect; train_candidate then reuses that stage (resumed at its last step) and its evaluation,
    and a second call finds the candidate finished."""
    run = exported_sft(tmp_path / "run", public_data)
    (tmp_path / "in.jsonl").write_text('{"text": "unused"}\n')
    train = {**config(base).model_dump(exclude_unset=True), "eval": {"rouge_sample": 1, "max_new_tokens": 4}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"inputs": [{"path": str(tmp_path / "in.jsonl")}], "train": train}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}

    def entry(name: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", f"training.{name}", str(path), "--data", str(run)]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)

    done = entry("sft")
    assert done.returncode == 0, done.stderr[-3000:]
    result = StageResult.model_validate_json((run / "train" / "sft" / "stage.json").read_text())
    assert result.stage == "sft" and result.steps == 2 and result.adapter_dir == run / "train" / "sft" / "adapter"
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.eval is not None and result.eval["rouge_samples"] == 1 and result.eval_loss == result.eval["eval_loss_after"]
    assert (run / "train" / "sft" / "generations.json").is_file()
    assert f"result: {run / 'train' / 'sft' / 'stage.json'}" in done.stdout
    # The method has no preference stage: one message, exit 2, nothing trained. `python -m
    # training.dpo` in this process, as the interpreter runs it (runpy), without a second
    # interpreter's ~10 s of torch/peft/trl imports; runpy notes training.dpo is imported already.
    capsys.readouterr()
    with warnings.catch_warnings(), pytest.raises(SystemExit) as refused:
        warnings.filterwarnings("ignore", "'training.dpo' found in sys.modules", RuntimeWarning)
        monkeypatch.setattr(sys, "argv", ["dpo", str(path), "--data", str(run)])
        runpy.run_module("training.dpo", run_name="__main__", alter_sys=True)
    out, err = capsys.readouterr()
    assert refused.value.code == 2 and out == ""
    assert err == "training: error: train.method: sft runs sft, no dpo stage\n"
    assert not (run / "train" / "dpo").exists()

    section = TrainConfig.model_validate(train)
    first = train_candidate(section, "main", run)
    assert first.stages["sft"].steps == 2 and first.stages["sft"].resumed_from == run / "train" / "sft" / "checkpoint-2"
    assert first.metrics.eval_loss == first.stages["sft"].eval["eval_loss_after"]  # the stage's evaluation, reused
    assert first.win_rate is None and first.errors is None  # no judge: training knows no jury
    assert CandidateResult.read(run / "train" / "result.json") == first
    written = (run / "train" / "result.json").stat().st_mtime_ns
    assert train_candidate(section, "main", run) == first and (run / "train" / "result.json").stat().st_mtime_ns == written
    summary = summarize(section, run, {"main": first})
    assert TrainSummary.read(run / "train" / "summary.json") == summary and summary.best == "main"
    assert (run / "train" / "best").resolve() == result.adapter_dir.resolve()


def test_the_training_printout_counts_each_stage_s_rows() -> None:
    from schemas.train_result import TrainSummary
    from training.console import summary_text

    def stage(name: str, dropped: int) -> dict:
        return {"stage": name, "steps": 3, "train_loss": 1.25, "eval_loss": None, "tokens_per_second": None,
                "train_rows": 168, "dropped_rows": dropped, "resumed_from": None, "adapter_dir": "/r/a", "merged_dir": None}

    metrics = {"eval_loss": None, "rouge_l": None, "bertscore": None}
    main = {"name": "main", "fingerprint": "f", "method": "sft_dpo", "adapter_dir": "/r/a",
            "stages": {"sft": stage("sft", 85), "dpo": stage("dpo", 0)}, "metrics": {**metrics, "win_rate": None},
            "base_metrics": metrics, "win_rate": None, "errors": None, "gguf": None,
            "seconds": {"stages": 1.0, "evaluate": 0.0, "judge": 0.0}}
    summary = TrainSummary.model_validate({"select_by": ["eval_loss"], "best": "main", "candidates": {"main": main},
                                           "leaderboard": [{"rank": 1, "name": "main", **metrics, "win_rate": None}]})
    lines = summary_text(summary, Path("/r")).splitlines()
    assert lines[:2] == [
        "sft: 3 steps on 83 of 168 train rows (85 left out: too long for train.max_seq_length), train loss 1.2500, adapter /r/a",
        "dpo: 3 steps on 168 train rows, train loss 1.2500, adapter /r/a",
    ]
