"""Instruction-following difficulty (IFD; Li et al. 2024, "From Quantity to Quality", the Cherry
LLM data selection): how much the instruction helps a causal LM predict the answer.

    IFD = loss(answer | instruction) / loss(answer)

each loss the mean cross-entropy over the answer's tokens. The conditioned text is the prompt
turns rendered through the model's chat template with the generation prompt, then the answer's
tokens; the unconditioned text is the answer's tokens after the tokenizer's BOS token (else its
EOS token, a document boundary), so both means cover the same tokens. Near or above 1: the
instruction does not help (hard, or unrelated to its answer); low: the answer follows from it.

Texts are cut to `max_tokens`: the answer keeps its first max_tokens // 2 tokens, the prompt its
last tokens that fit. Batched, longest first; the time it will take is estimated from the first
batch and logged before the rest runs, then a progress bar shows its ETA.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from curation.export.render import render
from schemas.base import ConfigError, StageFailed
from schemas.bundled import bundled_smollm2_gguf

log = logging.getLogger(__name__)

Messages = list[dict]
Sequence = tuple[list[int], int]  # token ids, and where the answer starts in them


def check_ifd_model(model: str | None) -> None:
    """Before any work: the IFD model is a model directory (config.json), or the bundled SmolLM2
    is installed (None)."""
    if model is None:
        bundled_smollm2_gguf()
    elif not (Path(model) / "config.json").is_file():
        raise ConfigError(f"select.ifd.model: {model} is not a model directory (no config.json)")


def ifd_scores(
    prompts: list[Messages], answers: list[str], model_dir: Path, batch_size: int, max_tokens: int, progress: bool
) -> np.ndarray:
    """IFD per (prompt turns, answer); NaN for an empty answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if not tokenizer.chat_template:
        raise StageFailed(f"select.ifd: the tokenizer of {model_dir} has no chat template to render instructions with")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, device_map=device).eval()
    conditioned, unconditioned = sequences(tokenizer, prompts, answers, max_tokens)
    losses = answer_losses(model, conditioned + unconditioned, batch_size, progress, str(model_dir))
    cond, uncond = losses[: len(answers)], losses[len(answers) :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(uncond > 0, cond / uncond, np.nan)


def sequences(tokenizer, prompts: list[Messages], answers: list[str], max_tokens: int) -> tuple[list[Sequence], list[Sequence]]:  # noqa: ANN001
    """The conditioned and unconditioned token sequences of each record (see the module doc)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    rendered = [render(tokenizer, p, add_generation_prompt=True) for p in prompts]
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    conditioned, unconditioned = [], []
    for p, a in zip(prompt_ids, answer_ids, strict=True):
        a = a[: max_tokens // 2]
        p = p[len(p) - min(len(p), max_tokens - len(a)) :]
        conditioned.append((p + a, len(p)))
        unconditioned.append(([start, *a], 1))
    return conditioned, unconditioned


def answer_losses(model, seqs: list[Sequence], batch_size: int, progress: bool, name: str) -> np.ndarray:  # noqa: ANN001
    """Mean cross-entropy of each sequence's tokens from its answer start on (NaN: no answer)."""
    import torch

    out = np.full(len(seqs), np.nan)
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i][0]), i))  # longest first: the estimate is an upper bound
    total_tokens = sum(len(s[0]) for s in seqs)
    device = next(model.parameters()).device
    bar = tqdm(total=len(seqs), desc="select ifd", unit="text", disable=not progress)
    began, done_tokens = time.perf_counter(), 0
    with torch.no_grad():
        for lo in range(0, len(order), batch_size):
            batch = order[lo : lo + batch_size]
            width = max(len(seqs[i][0]) for i in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)  # the targets that count
            for k, i in enumerate(batch):
                tokens, answer_at = seqs[i]
                ids[k, : len(tokens)] = torch.tensor(tokens)
                mask[k, : len(tokens)] = 1
                scored[k, max(answer_at, 1) : len(tokens)] = True
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            # Position t predicts token t + 1.
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), ids[:, 1:].to(device), reduction="none"
            ).cpu()
            keep = scored[:, 1:]
            counts = keep.sum(dim=1)
            sums = (nll * keep).sum(dim=1)
            for k, i in enumerate(batch):
                if counts[k] > 0:
                    out[i] = float(sums[k] / counts[k])
            done_tokens += sum(len(seqs[i][0]) for i in batch)
            if lo == 0:
                seconds = (time.perf_counter() - began) * total_tokens / max(done_tokens, 1)
                log.info(
                    "select: IFD reads %d texts (%d tokens) with %s on %s: about %.0f s (from the first batch)",
                    len(seqs), total_tokens, name, device, seconds,
                )
            bar.update(len(batch))
    bar.close()
    return out
