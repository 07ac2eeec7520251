"""Length checks: word, character and token bounds on a record's text and on its turns by role."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from curation.filters.checks import CONTENT, ROW, Check, with_words, word_count
from curation.llm.tokenizer import load_tokenizer
from schemas.config import Bounds, LengthFilter

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from curation.filters.stage import Section, Work

UNITS = ("words", "chars", "tokens")


def length_section(cfg: LengthFilter) -> Section:
    tokenizer = load_tokenizer(cfg.tokenizer) if cfg.uses_tokens() else None

    def section(work: Work) -> list[Check]:
        # The whole record is one "turn", so record and per-role bounds share one code path.
        checks = _bound_checks(work, work.texts(words=_bounded(cfg, "words")), cfg, "", tokenizer)
        for role, bounds in cfg.roles.items():
            turns = work.turns().filter(pl.col("role") == role)
            checks += _bound_checks(work, turns, bounds, f"{role}_", tokenizer)
        return checks

    return section


def _bound_checks(
    work: Work,
    texts: pl.DataFrame,
    bounds: Bounds,
    prefix: str,
    tokenizer: PreTrainedTokenizerBase | None,
) -> list[Check]:
    """Checks for `bounds` on every text of a record: the shortest must reach each min, the
    longest must not pass each max. Reasons and helper columns are prefixed with `prefix`."""
    units = [unit for unit in UNITS if _bounded(bounds, unit)]
    if not units:
        return []
    if "words" in units:
        texts = with_words(texts)
    counts = texts.select(ROW, *(_count(unit, texts, tokenizer).alias(unit) for unit in units))
    work.add(
        counts.group_by(ROW).agg(
            *(pl.col(u).min().alias(f"_{prefix}{u}_min") for u in units),
            *(pl.col(u).max().alias(f"_{prefix}{u}_max") for u in units),
        )
    )
    subject = f"{prefix[:-1]} turn: " if prefix else ""
    checks = []
    for unit in units:
        for side, reason, op in (("min", "too_few", "<"), ("max", "too_many", ">")):
            limit = getattr(bounds, f"{side}_{unit}")
            if limit is None:
                continue
            count = pl.col(f"_{prefix}{unit}_{side}")
            checks.append(
                Check(
                    reason=f"{prefix}{reason}_{unit}",
                    drop=count < limit if side == "min" else count > limit,
                    detail=pl.format(f"{subject}{{}} {unit} {op} {side}_{unit} {limit}", count),
                )
            )
    return checks


def _bounded(bounds: Bounds, unit: str) -> bool:
    return getattr(bounds, f"min_{unit}") is not None or getattr(bounds, f"max_{unit}") is not None


def _count(unit: str, texts: pl.DataFrame, tokenizer: PreTrainedTokenizerBase | None) -> pl.Expr:
    if unit == "words":
        return word_count()
    if unit == "chars":
        return pl.col(CONTENT).str.len_chars()
    assert tokenizer is not None  # loaded whenever a token bound is set
    # One batched call: the fast tokenizer spreads the batch over all cores.
    batch = texts[CONTENT].to_list()
    encoded = tokenizer(batch, add_special_tokens=False, return_length=True, return_attention_mask=False)
    return pl.lit(pl.Series(encoded["length"], dtype=pl.UInt32))
