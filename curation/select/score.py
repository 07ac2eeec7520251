"""The selection score: the configured signals of each sft record, each turned into its
percentile among the records, combined by the config's weights.

Percentiles put a jury score on 1..5, an IFD around 1 and a length in tokens on one scale, so a
weight says how much a signal counts whatever its units; the combined score is divided by the
sum of the absolute weights, so it lies in [0, 1] (MMR weighs it against a cosine). A record
without a value for a signal (unscored by the jury) takes that signal's lowest percentile.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from curation.export.render import render, token_counts
from schemas.jury import JuryVerdict


def jury_scores(records: pl.DataFrame) -> np.ndarray:
    """meta.jury.score per record (aggregate or distilled), NaN where it has none."""
    out = np.full(records.height, np.nan)
    for i, meta in enumerate(records["meta"].to_list()):
        verdict = JuryVerdict.read(meta)
        if verdict is not None and verdict.score is not None:
            out[i] = verdict.score
    return out


def record_tokens(records: pl.DataFrame, tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """Tokens of each sft record rendered through the chat template, as export counts them
    (curation.export.render); -1 where the template fails (export rejects those as template_error)."""
    texts: list[str] = []
    rendered: list[int] = []
    for i, messages in enumerate(records["messages"].to_list()):
        try:
            texts.append(render(tokenizer, messages))
            rendered.append(i)
        except TemplateError:
            continue
    out = np.full(records.height, -1, np.int64)
    out[rendered] = token_counts(tokenizer, texts)
    return out


def percentiles(values: np.ndarray) -> np.ndarray:
    """Each value's mid-rank percentile in [0, 1] (ties share one; NaN counts as the lowest)."""
    n = len(values)
    if n == 0:
        return np.zeros(0)
    filled = np.where(np.isnan(values), -np.inf, values)
    order = np.argsort(filled, kind="stable")
    sorted_values = filled[order]
    # Mid-rank of each run of equal values: equal signals never order records by accident.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], n]
    mid = np.repeat((starts + ends - 1) / 2, ends - starts)
    ranks = np.empty(n)
    ranks[order] = mid
    return ranks / (n - 1) if n > 1 else np.full(n, 0.5)


def combined(signals: dict[str, np.ndarray], weights: dict[str, float], n: int) -> np.ndarray:
    """sum(weight * percentile) / sum(|weight|) for n records (0 with no weights): in [0, 1]; a
    negative weight (length: prefer short) counts 1 - percentile, so the range stays [0, 1]."""
    total = sum(abs(w) for w in weights.values())
    score = np.zeros(n)
    for name, weight in weights.items():
        p = percentiles(signals[name])
        score += weight * p if weight >= 0 else -weight * (1 - p)
    return score / total if total else score
