"""Repetition checks (Gopher-style): the share of repeated lines and of the top word n-gram."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from curation.filters.checks import CONTENT, ROW, WORDS, Check
from schemas.config import RepetitionFilter

if TYPE_CHECKING:
    from curation.filters.stage import Section, Work

# The figures are computed in steps, one select each, so every step's columns are materialised:
# polars would recompute a sub-expression that several expressions share.


def repetition_section(cfg: RepetitionFilter) -> Section:
    def section(work: Work) -> list[Check]:
        checks = []
        if cfg.max_dup_line_frac is not None:
            work.add(_dup_line_fraction(work.texts(cfg.view)))
            what = "of lines repeat an earlier line"
            checks.append(
                _fraction_check("repeated_lines", what, "max_dup_line_frac", cfg.max_dup_line_frac)
            )
        if cfg.max_top_ngram_frac is not None:
            work.add(_top_ngram_fraction(work.texts(cfg.view, words=True), cfg.ngram, cfg.max_top_ngram_frac))
            what = f"of word chars in the top {cfg.ngram}-gram"
            checks.append(
                _fraction_check("repeated_ngrams", what, "max_top_ngram_frac", cfg.max_top_ngram_frac)
            )
        return checks

    return section


def _fraction_check(reason: str, what: str, setting: str, limit: float) -> Check:
    """`reason` when the record's fraction (helper column `_<reason>`) passes `limit`."""
    frac = pl.col(f"_{reason}")
    cents = (frac * 100).round().cast(pl.Int64)
    shown = pl.format("{}.{}", cents // 100, (cents % 100).cast(pl.String).str.zfill(2))
    return Check(reason, frac > limit, pl.format(f"{{}} {what} > {setting} {limit}", shown))


def _dup_line_fraction(texts: pl.DataFrame) -> pl.DataFrame:
    """(ROW, _repeated_lines): the share of non-empty lines equal to an earlier line (stripped)."""
    stripped = texts.select(
        ROW, pl.col(CONTENT).str.split("\n").list.eval(pl.element().str.strip_chars()).alias("l")
    )
    lines = stripped.select(ROW, pl.col("l").list.eval(pl.element().filter(pl.element() != "")))
    counts = lines.select(
        ROW, pl.col("l").list.len().alias("n"), pl.col("l").list.n_unique().alias("unique")
    )
    return counts.select(
        ROW, pl.when(pl.col("n") > 0).then(1 - pl.col("unique") / pl.col("n")).alias("_repeated_lines")
    )


def _top_ngram_fraction(texts: pl.DataFrame, n: int, limit: float) -> pl.DataFrame:
    """(ROW, _repeated_ngrams): characters of the words covered by the most frequent word
    n-gram over all word characters, for the records where it occurs twice or more and the
    fraction can pass `limit` (null elsewhere: the record passes).

    An n-gram is a hash: the sum of its word hashes times powers of a prime (mod 2^64).
    Its character count is packed into the top 16 bits, so the mode with the largest packed
    value is the most frequent n-gram with the most characters (ties broken by length).
    """
    words = texts.select(
        ROW,
        pl.col(WORDS).list.eval(pl.element().hash()).alias("hashes"),
        pl.col(WORDS).list.eval(pl.element().str.len_chars()).alias("lengths"),
        (pl.col(WORDS).list.len().cast(pl.Int64) - (n - 1)).clip(0).alias("grams"),  # u32 would wrap
    )
    key = pl.sum_horizontal(
        pl.col("hashes").list.slice(j, pl.col("grams")) * pl.lit(pow(1_000_003, j, 2**64), pl.UInt64)
        for j in range(n)
    )
    chars = pl.sum_horizontal(pl.col("lengths").list.slice(j, pl.col("grams")) for j in range(n))
    packed = (
        chars.cast(pl.List(pl.UInt64)).list.eval(pl.element().clip(0, 0xFFFF)) * 2**48 + key // 2**16
    )
    figures = words.select(ROW, packed.alias("packed"), pl.col("lengths").list.sum().alias("total"))
    # Counting is the costly part, so it narrows down: most records repeat no n-gram at all,
    # and for most others even the top count times the longest n-gram stays under the limit.
    repeats = figures.filter(pl.col("packed").list.n_unique() < pl.col("packed").list.len())
    counted = repeats.with_columns(
        pl.col("packed").list.eval(pl.element().unique_counts().max()).list.first().alias("count")
    )
    longest = pl.col("packed").list.max() // 2**48
    top = counted.filter(pl.col("count") * longest / pl.col("total") > limit).with_columns(
        (pl.col("packed").list.eval(pl.element().mode().max()).list.first() // 2**48).alias("chars")
    )
    frac = (pl.col("count") * pl.col("chars") / pl.col("total")).clip(upper_bound=1.0)
    return top.select(ROW, frac.alias("_repeated_ngrams"))
