"""Evaluation after training, on the held-out rows: SFT before vs after, DPO reward accuracy.

Each stage's own trainer (`build_sft_trainer`, `build_dpo_trainer`) is built on the held-out
rows, so they get the same checks, chat-template route, loss masking and length limit as in
training, and `trainer.evaluate()` computes the metrics. The trained adapter's weights go into
the trainer's "default" adapter (the one its training trains), so only one model is in memory:
"before" is the same model with the adapter switched off. For DPO the reference is what training
compared against (the SFT adapter, else the base model).
"""

from __future__ import annotations

import functools
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel
from rouge_score.rouge_scorer import RougeScorer
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from schemas.bundled import bundled_minilm_dir
from schemas.train import TrainConfig, TrainingInputError
from training.dpo import build_dpo_trainer
from training.sft import build_sft_trainer

Prompt = list[int]


def sft_eval(cfg: TrainConfig, eval_ds: Dataset, adapter_dir: Path) -> dict[str, float | int | None]:
    """Eval loss and perplexity on `eval_ds` (a `messages` column), and ROUGE-L F1 of greedy answers
    on a seeded sample of `cfg.eval.rouge_sample` conversations, for the base model and with the
    adapter in `adapter_dir`. The ROUGE-L values are None when no conversation is sampled."""
    return evaluate_sft(cfg, eval_ds, adapter_dir)[0]


def evaluate_sft(
    cfg: TrainConfig,
    eval_ds: Dataset,
    adapter_dir: Path,
    baseline: tuple[float, list[dict]] | None = None,
) -> tuple[dict[str, float | int | None], list[Generation]]:
    """`sft_eval`'s metrics and the answers behind its ROUGE-L, one Generation per sampled prompt.

    Any adapter of the config's layout evaluates: the SFT one, or the DPO / ORPO adapter of the
    method's last stage (the whole tuned model, since DPO continues the SFT weights). `baseline`,
    the base model's eval loss and generations from an earlier evaluation of the same config on
    the same rows, saves computing them again (used only if its prompts are this sample's)."""
    with tempfile.TemporaryDirectory() as scratch:  # the trainer saves nothing; it only needs a dir
        trainer, _ = build_sft_trainer(
            _eval_config(cfg, "sft", len(eval_ds)), eval_ds, eval_ds, Path(scratch)
        )
        model, tokenizer = trainer.model, trainer.processing_class
        _load_trained(model, adapter_dir)
        sample = _rouge_sample(eval_ds, tokenizer, cfg)
        prompts = [ids for ids, _, _ in sample]
        references = [answer for _, _, answer in sample]
        batch = trainer.args.per_device_eval_batch_size
        if baseline is not None and [g["prompt"] for g in baseline[1]] == [turns for _, turns, _ in sample]:
            loss_before = baseline[0]
            before, before_cut = [g["base"] for g in baseline[1]], [g["base_truncated"] for g in baseline[1]]
        else:
            with model.disable_adapter():
                loss_before = trainer.evaluate()["eval_loss"]
                before, before_cut = _answers(model, tokenizer, prompts, cfg, batch)
        loss_after = trainer.evaluate()["eval_loss"]
        after, after_cut = _answers(model, tokenizer, prompts, cfg, batch)
    metrics = {
        "eval_loss_before": loss_before,
        "eval_loss_after": loss_after,
        "perplexity_before": math.exp(loss_before),
        "perplexity_after": math.exp(loss_after),
        "rouge_l_before": rouge_l(before, references),
        "rouge_l_after": rouge_l(after, references),
        "rouge_samples": len(references),
    }
    generations = [
        Generation(turns, reference, *answers)
        for (_, turns, reference), answers in zip(
            sample, zip(before, after, before_cut, after_cut, strict=True), strict=True
        )
    ]
    return metrics, generations


def row_losses(cfg: TrainConfig, eval_ds: Dataset, adapter_dir: Path) -> list[float] | None:
    """The tuned model's mean token loss on each row of `eval_ds`, masked and cut as its eval
    loss is (the same trainer build), in the evaluation's row order: what a paired interval of
    two trainings' loss difference resamples. None with packing (rows share sequences). One
    more forward pass over the held-out rows: the trainer's loss is a batch mean only."""
    if cfg.sft.packing:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        trainer, _ = build_sft_trainer(_eval_config(cfg, "sft", len(eval_ds)), eval_ds, eval_ds, Path(scratch))
        model = trainer.model
        _load_trained(model, adapter_dir)
        model.eval()
        losses: list[float] = []
        with torch.no_grad():
            for batch in trainer.get_eval_dataloader():
                batch = trainer._prepare_inputs(batch)
                ids, labels = batch["input_ids"], batch["labels"][:, 1:]
                logits = model(input_ids=ids, attention_mask=batch.get("attention_mask")).logits
                logits = logits[:, -ids.shape[1] : -1]  # prompt tuning puts its virtual tokens first
                token = torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2).float(), labels, ignore_index=-100, reduction="none"
                )
                losses += (token.sum(dim=1) / (labels != -100).sum(dim=1).clamp(min=1)).tolist()
    return losses


@dataclass(frozen=True)
class Generation:
    """One held-out prompt answered greedily by the base model and by the tuned one."""

    prompt: list[dict[str, str]]  # the turns before the reference answer
    reference: str
    base: str
    tuned: str
    base_truncated: bool  # stopped at max_new_tokens (or max_seq_length) before an end token
    tuned_truncated: bool


def dpo_eval(
    cfg: TrainConfig, eval_ds: Dataset, adapter_dir: Path, sft_adapter_dir: Path | None
) -> dict[str, float]:
    """DPO loss, reward accuracy (share of pairs where chosen out-rewards rejected) and mean reward
    margin of the DPO adapter in `adapter_dir` on held-out pairs, against the reference training
    used: the SFT adapter in `sft_adapter_dir`, or the base model when None."""
    with tempfile.TemporaryDirectory() as scratch:
        trainer, _ = build_dpo_trainer(
            _eval_config(cfg, "dpo", len(eval_ds)), eval_ds, eval_ds, sft_adapter_dir, Path(scratch)
        )
        _load_trained(trainer.model, adapter_dir)
        metrics = trainer.evaluate()
    return {
        "eval_loss": metrics["eval_loss"],
        "reward_accuracy": metrics["eval_rewards/accuracies"],
        "reward_margin": metrics["eval_rewards/margins"],
    }


def rouge_l(predictions: list[str], references: list[str]) -> float | None:
    """Mean ROUGE-L F1 (rouge-score: lowercased word tokens, no stemming); None for no pairs."""
    if not references:
        return None
    scorer = RougeScorer(["rougeL"])
    pairs = zip(predictions, references, strict=True)
    scores = [scorer.score(reference, prediction)["rougeL"].fmeasure for prediction, reference in pairs]
    return sum(scores) / len(scores)


def bertscore(predictions: list[str], references: list[str]) -> float | None:
    """Mean BERTScore F1 (Zhang et al. 2020) with the bundled all-MiniLM-L6-v2 as the scorer: each
    token of one text matched to its most similar token of the other by cosine of last-layer
    embeddings, precision and recall averaged over tokens; no idf weighting, no baseline
    rescaling. An empty text scores 0. None for no pairs."""
    if not references:
        return None
    tokenizer, model = _minilm()
    scores = []
    for prediction, reference in zip(predictions, references, strict=True):
        if not prediction.strip() or not reference.strip():
            scores.append(0.0)
            continue
        a, b = (_token_embeddings(tokenizer, model, text) for text in (prediction, reference))
        similarity = a @ b.T
        precision, recall = similarity.max(dim=1).values.mean(), similarity.max(dim=0).values.mean()
        scores.append(float(2 * precision * recall / (precision + recall)))
    return sum(scores) / len(scores)


@functools.cache
def _minilm() -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    path = bundled_minilm_dir()
    return AutoTokenizer.from_pretrained(path, local_files_only=True), AutoModel.from_pretrained(path).eval()


def _token_embeddings(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, text: str) -> torch.Tensor:
    """Unit-length contextual embeddings of the text's tokens, without [CLS] and [SEP]."""
    inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=256)
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state[0, 1:-1]
    return torch.nn.functional.normalize(hidden, dim=-1)


def _eval_config(cfg: TrainConfig, stage: str, rows: int) -> TrainConfig:
    """The run's config for an evaluation-only trainer: no logger (it would record "before" and
    "after" as one curve at step 0), and a batch no larger than the held-out set, which the
    builders also check as train rows (they need one full batch). train.max_dropped bounds the
    rows a stage trains on, so it does not apply to the held-out rows here (they evaluate on what fits)."""
    params = getattr(cfg, stage)
    batch = params.model_copy(update={"batch_size": max(1, min(params.batch_size, rows))})
    return cfg.model_copy(update={"report_to": [], stage: batch, "max_dropped": 1.0})


def _load_trained(model: PeftModel, adapter_dir: Path) -> None:
    loaded = model.load_adapter(str(adapter_dir), adapter_name="default")
    # Another LoRA layout than the trainer's would leave modules at their fresh (zero) update.
    # Prompt tuning: peft loads the embedding strictly on its own and reports it as unexpected.
    prompt = model.peft_config["default"].is_prompt_learning
    if loaded.missing_keys or set(loaded.unexpected_keys) - ({"prompt_embeddings"} if prompt else set()):
        raise TrainingInputError(
            f"adapter {adapter_dir} does not match train.lora and the base model: evaluate with the"
            " config it was trained with"
        )


def _rouge_sample(
    eval_ds: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig
) -> list[tuple[Prompt, list[dict[str, str]], str]]:
    """Up to `rouge_sample` conversations, shuffled with the run's seed: the turns before the last
    answer rendered as a generation prompt, and that answer. Conversations without an answer, or
    whose prompt leaves no room for one within max_seq_length, are passed over. Sorted by prompt
    length, so that batches need little padding. Each: token ids, turns, reference answer."""
    picked: list[tuple[Prompt, list[dict[str, str]], str]] = []
    for row in eval_ds.select_columns(["messages"]).shuffle(seed=cfg.seed):
        if len(picked) == cfg.eval.rouge_sample:
            break
        messages = row["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            continue
        ids = tokenizer.apply_chat_template(messages[:last], add_generation_prompt=True, return_dict=False)
        if len(ids) < cfg.max_seq_length:
            picked.append((ids, messages[:last], messages[last]["content"]))
    picked.sort(key=lambda p: len(p[0]))
    return picked


def _answers(
    model: PeftModel | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    cfg: TrainConfig,
    batch: int,
) -> tuple[list[str], list[bool]]:
    """Greedy answers, `batch` prompts at a time, left-padded so every answer starts right after its
    prompt; at most max_new_tokens each, and prompt + answer never longer than max_seq_length.
    Also whether each was cut off: it ended without an end token."""
    answers: list[str] = []
    truncated: list[bool] = []
    ends = model.generation_config.eos_token_id
    ends = set(ends if isinstance(ends, list) else [ends]) | {tokenizer.eos_token_id}
    for start in range(0, len(prompts), batch):
        inputs = tokenizer.pad(
            {"input_ids": prompts[start : start + batch]}, padding_side="left", return_tensors="pt"
        ).to(model.device)
        width = inputs["input_ids"].shape[1]
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=min(cfg.eval.max_new_tokens, cfg.max_seq_length - width),
            pad_token_id=tokenizer.pad_token_id,
        )
        answers += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        truncated += [not ends & set(row) for row in out[:, width:].tolist()]
    return [a.strip() for a in answers], truncated
