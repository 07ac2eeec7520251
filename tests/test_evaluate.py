"""Evaluation after training: SFT loss / perplexity / ROUGE-L before vs after, DPO reward accuracy.

Tiny Llamas with the real SmolLM2 tokenizer and real rows, as in test_training (whose fixtures
and helpers are reused). A few SFT steps at a high learning rate overfit four rows: evaluated on
those rows, the loss must fall.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
from test_training import FAST, PAIRS, base, config, pref_data, sft_data, tokenizer_dir  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer

from schemas.train import TrainConfig, TrainingInputError
from training.common import TrainOutcome
from training.dpo import train_dpo
from training.evaluate import _answers, dpo_eval, evaluate_sft, rouge_l, sft_eval
from training.sft import train_sft

Overfit = tuple[TrainConfig, TrainOutcome]
SFT_KEYS = {
    "eval_loss_before",
    "eval_loss_after",
    "perplexity_before",
    "perplexity_after",
    "rouge_l_before",
    "rouge_l_after",
    "rouge_samples",
}


@pytest.fixture(scope="module")
def overfit(base: Path, public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Overfit:
    """SFT overfitting four GSM8K rows, evaluated on the same rows at its last step."""
    cfg = config(
        base,
        sft={**FAST, "max_steps": 6, "learning_rate": 1e-2},
        eval={"rouge_sample": 3, "max_new_tokens": 8},
    )
    rows = sft_data(public_data, 4)
    return cfg, train_sft(cfg, rows, rows, tmp_path_factory.mktemp("sft"))


def digest(directory: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(directory.iterdir()))).hexdigest()


def test_sft_eval_before_and_after(overfit: Overfit, public_data: Path) -> None:
    cfg, outcome = overfit
    adapter_dir = outcome.adapter_dir
    rows = sft_data(public_data, 4)  # the train rows: the overfitting is what shows
    before = digest(adapter_dir)
    stats, generations = evaluate_sft(cfg, rows, adapter_dir)

    assert set(stats) == SFT_KEYS
    assert json.loads(json.dumps(stats)) == stats  # goes into the run's stats as is
    assert stats["eval_loss_after"] == pytest.approx(outcome.eval_loss)  # as the trainer measured it
    assert stats["eval_loss_after"] < stats["eval_loss_before"] - 0.1
    assert stats["perplexity_before"] == pytest.approx(math.exp(stats["eval_loss_before"]))
    assert stats["perplexity_after"] == pytest.approx(math.exp(stats["eval_loss_after"]))
    assert stats["rouge_samples"] == 3
    assert 0 <= stats["rouge_l_before"] <= 1 and 0 <= stats["rouge_l_after"] <= 1

    assert digest(adapter_dir) == before  # the adapter on disk is only read
    # Deterministic: same inputs, same numbers; the base model's side can come from this evaluation.
    baseline = (stats["eval_loss_before"], [asdict(g) for g in generations])
    assert evaluate_sft(cfg, rows, adapter_dir, baseline) == (stats, generations)


def test_sft_eval_without_rouge(overfit: Overfit, public_data: Path) -> None:
    cfg, outcome = overfit
    no_rouge = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"rouge_sample": 0})})
    # One held-out row, fewer than a batch: still evaluated.
    stats = sft_eval(no_rouge, sft_data(public_data, 1), outcome.adapter_dir)
    assert (stats["rouge_l_before"], stats["rouge_l_after"], stats["rouge_samples"]) == (None, None, 0)
    assert math.isfinite(stats["eval_loss_after"])


def test_rouge_l() -> None:
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == 1.0
    assert rouge_l(["a dog"], ["the cat"]) == 0.0
    assert rouge_l(["the cat on mat"], ["the cat sat on the mat"]) == pytest.approx(0.8)  # P 1, R 2/3
    assert rouge_l(["x", "the cat"], ["y", "the cat"]) == 0.5  # mean over pairs
    assert rouge_l([], []) is None


def test_batched_generation_matches_one_by_one_and_fits_max_seq_length(base: Path) -> None:
    # The random base model on plain text: answers differ per prompt, and right padding would change them.
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    texts = ["2+2?", "How many legs do three spiders and a dog have in total?", "Name a colour."]
    prompts = [tokenizer(text)["input_ids"] for text in texts]
    cfg = config(base, eval={"max_new_tokens": 8})
    batched, truncated = _answers(model, tokenizer, prompts, cfg, batch=3)
    assert len(set(batched)) == 3 and all(batched)
    assert truncated == [True] * 3  # a random model never says its end token within 8
    assert (batched, truncated) == _answers(model, tokenizer, prompts, cfg, batch=1)

    lengths: list[int] = []
    generate = model.generate

    def spy(**kwargs: Any) -> torch.Tensor:
        out = generate(**kwargs)
        lengths.append(out.shape[1])
        return out

    model.generate = spy  # type: ignore[method-assign]
    longest = max(len(p) for p in prompts)
    _answers(model, tokenizer, prompts, cfg.model_copy(update={"max_seq_length": longest + 3}), batch=3)
    assert lengths == [longest + 3]  # 3 new tokens, not the 8 asked for


def test_dpo_eval(base: Path, overfit: Overfit, public_data: Path, tmp_path: Path) -> None:
    sft_adapter = overfit[1].adapter_dir
    cfg = config(base, method="sft_dpo", dpo={**PAIRS, "max_steps": 4, "learning_rate": 5e-3})
    pairs = pref_data(public_data, 2)
    dpo_adapter = train_dpo(cfg, pairs, None, sft_adapter, tmp_path).adapter_dir

    stats = dpo_eval(cfg, pairs, dpo_adapter, sft_adapter)
    assert set(stats) == {"eval_loss", "reward_accuracy", "reward_margin"}
    assert 0 <= stats["reward_accuracy"] <= 1
    assert stats["reward_margin"] > 0  # trained on these pairs: chosen pulled above rejected
    # The SFT adapter judged against itself: every reward is 0, the loss is log 2.
    same = dpo_eval(cfg, pairs, sft_adapter, sft_adapter)
    assert same["reward_margin"] == 0 and same["eval_loss"] == pytest.approx(math.log(2))


def test_adapter_of_another_lora_layout_is_refused(overfit: Overfit, public_data: Path) -> None:
    cfg, outcome = overfit
    narrower = cfg.model_copy(update={"lora": cfg.lora.model_copy(update={"target_modules": ["q_proj"]})})
    with pytest.raises(TrainingInputError, match="does not match train.lora"):
        sft_eval(narrower, sft_data(public_data, 2), outcome.adapter_dir)


@pytest.mark.slow  # trains: 25 s on 2 cores
def test_prompt_tuning_eval_before_and_after(base: Path, public_data: Path, tmp_path: Path) -> None:
    cfg = config(
        base,
        method="prompt_tuning",
        sft={**FAST, "max_steps": 6, "learning_rate": 1e-1},
        eval={"rouge_sample": 2, "max_new_tokens": 4},
    )
    rows = sft_data(public_data, 4)
    outcome = train_sft(cfg, rows, None, tmp_path)
    stats, generations = evaluate_sft(cfg, rows, outcome.adapter_dir)
    assert stats["eval_loss_after"] < stats["eval_loss_before"]  # the virtual tokens learned the rows
    assert len(generations) == 2 and generations[0].prompt[-1]["role"] == "user"
    assert all(g.base_truncated for g in generations)  # 4 tokens: a random model never stops that soon
