"""Repetition checks (Gopher-style): the share of repeated lines and of the top word n-gram.

Gopher's rules are made for documents, so instruction data gets two allowances: texts shorter
than their kind's `min_words` are not checked (50 for documents, as Gopher; 100 for
conversations, whose answers repeat nouns and numbers by design), and markup is set aside first - tool-call lines (a JSON object
per line), GSM8K-style calculator annotations (`<<48/2=24>>`) and lines with no letter or digit
(code fences, closing braces) - as they repeat by design.

By default (`structure_aware`) both rules count only degenerate repetition, as songs, poems and
tables repeat by design. A model stuck in a loop writes the same line, sentence or block again
and again back to back; a chorus comes back with a verse between, a table repeats its rows'
cells. So `repeated_lines` is the share of characters in units (lines, and the sentences of a line)
repeated three or more times running, alone or as a block of up to 16 units; and the top n-gram
is found with table rows set aside and each distinct line counted once (a sung chorus's words
would count every time; repeated lines are the first rule's business).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from curation.filters.checks import CONTENT, ROW, WORDS, Check, with_words
from schemas.config import RepetitionFilter

if TYPE_CHECKING:
    from curation.filters.stage import Section, Work

# The figures are computed in steps, one select each, so every step's columns are materialised:
# polars would recompute a sub-expression that several expressions share.


# Markup that repeats by design: a line holding one JSON object (a tool call), a calculator
# annotation, a line without a letter or digit.
_TOOL_CALL_LINE = r"(?m)^[ \t]*\{.*\}[ \t]*$"
_CALCULATOR = r"<<[^<>\n]*>>"
_NO_WORD_LINE = r"(?m)^[^\p{L}\p{N}\n]*$"

# A unit of the loop count is a line or a sentence of it (Western or CJK full stops); a list
# marker (`-`, `*`, `3.`, `b)`) is dropped so numbered copies of one item are the same unit.
_LIST_MARKER = r"(?m)^[ \t]*(?:[-*+>\u2022]+|\(?\d+[.)]|\(?[A-Za-z][.)])[ \t]+"
_SENTENCE_END = r"([.!?])[ \t]+|([\u3002\uff01\uff1f])"
# The longest block (in units) whose back-to-back repeats count as a loop: a numbered step or a
# list item of a few lines looping; a whole chorus sung twice running is never three times.
LOOP_SPAN = 16
# A Markdown table row: its cells repeat by design (a column of the same value).
_TABLE_ROW = r"^[ \t]*\|.*\|"


def repetition_section(cfg: RepetitionFilter) -> Section:
    def section(work: Work) -> list[Check]:
        checks = []
        texts = _checked_texts(work.texts(cfg.view), work.records.select(ROW, "kind"), cfg.min_words)
        if cfg.max_dup_line_frac is not None:
            if cfg.structure_aware:
                work.add(_loop_fraction(texts))
                what = "of chars in a line, sentence or block repeated 3+ times running"
            else:
                work.add(_dup_line_fraction(texts))
                what = "of lines repeat an earlier line"
            checks.append(
                _fraction_check("repeated_lines", what, "max_dup_line_frac", cfg.max_dup_line_frac)
            )
        if cfg.max_top_ngram_frac is not None:
            counted = _distinct_prose_lines(texts) if cfg.structure_aware else texts
            work.add(_top_ngram_fraction(counted, cfg.ngram, cfg.max_top_ngram_frac))
            what = f"of word chars in the top {cfg.ngram}-gram"
            checks.append(
                _fraction_check("repeated_ngrams", what, "max_top_ngram_frac", cfg.max_top_ngram_frac)
            )
        return checks

    return section


def _checked_texts(texts: pl.DataFrame, kinds: pl.DataFrame, min_words: dict[str, int]) -> pl.DataFrame:
    """The texts the rules look at: markup set aside, and only those of their kind's
    `min_words` words or more."""
    content = pl.col(CONTENT)
    cleaned = texts.select(
        ROW,
        content.str.replace_all(_TOOL_CALL_LINE, "")
        .str.replace_all(_CALCULATOR, "")
        .str.replace_all(_NO_WORD_LINE, "")
        .alias(CONTENT),
    )
    words = with_words(cleaned).join(kinds, on=ROW, how="left", maintain_order="left")
    least = pl.col("kind").replace_strict(min_words, return_dtype=pl.Int64)
    return words.filter(pl.col(WORDS).list.len() >= least).drop("kind")


def _fraction_check(reason: str, what: str, setting: str, limit: float) -> Check:
    """`reason` when the record's fraction (helper column `_<reason>`) passes `limit`; the
    detail shows it to a tenth of a percent, rounded down, beside the limit (never `0.20 > 0.2`)."""
    frac = pl.col(f"_{reason}")
    tenths = (frac * 1000).floor().cast(pl.Int64)
    shown = pl.format("{}.{}%", tenths // 10, tenths % 10)
    return Check(reason, frac > limit, pl.format(f"{{}} {what}, over {setting} {limit:g} ({limit * 100:g}%)", shown))


def _loop_fraction(texts: pl.DataFrame) -> pl.DataFrame:
    """(ROW, _repeated_lines): the share of the characters of units (lines and their sentences,
    compared case-folded and stripped) that repeat in a loop: a unit equal to the one `p` units
    before it, in a run of such units at least `2p` long - the same unit or block of `p` units
    three times or more back to back - for any `p` up to LOOP_SPAN."""
    units = (
        texts.select(
            ROW,
            pl.col(CONTENT)
            .str.replace_all(_LIST_MARKER, "")
            .str.replace_all(_SENTENCE_END, "${1}${2}\n")
            .str.to_lowercase()
            .str.split("\n")
            .alias("unit"),
        )
        .explode("unit")
        .select(ROW, pl.col("unit").str.strip_chars())
        .filter(pl.col("unit") != "")
    )
    keyed = units.select(ROW, pl.col("unit").hash().alias("key"), pl.col("unit").str.len_chars().alias("chars"))
    looped = keyed.select(
        ROW, "chars", pl.any_horizontal(_in_loop(p) for p in range(1, LOOP_SPAN + 1)).alias("looped")
    )
    share = pl.col("chars").filter(pl.col("looped")).sum() / pl.col("chars").sum()
    return looped.group_by(ROW).agg(share.alias("_repeated_lines"))


def _in_loop(p: int) -> pl.Expr:
    """Whether a unit repeats the one `p` before it within a run of such units of `2p` or more
    (runs never cross records: a record's first `p` units have nothing `p` before them)."""
    same = ((pl.col("key") == pl.col("key").shift(p)) & (pl.col(ROW) == pl.col(ROW).shift(p))).fill_null(False)
    return same & (pl.len().over(same.rle_id()) >= 2 * p)


def _distinct_prose_lines(texts: pl.DataFrame) -> pl.DataFrame:
    """The texts with table rows set aside and each distinct line once (stripped), for the
    n-gram count."""
    lines = pl.col(CONTENT).str.split("\n").list.eval(pl.element().str.strip_chars())
    prose = lines.list.eval(pl.element().filter(~pl.element().str.contains(_TABLE_ROW)).unique(maintain_order=True))
    return with_words(texts.select(ROW, prose.list.join("\n").alias(CONTENT)))


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
