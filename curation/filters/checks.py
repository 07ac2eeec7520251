"""What the filter stage and its sections share: the Check, helper-column names, word splitting
and counting."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

ROW = "_row"  # input position: the key of every helper table
CONTENT = "_content"  # in a texts table (ROW, CONTENT[, WORDS]): one text of a record
WORDS = "_words"  # its words
# Unicode White_Space (what regex \s matches) besides " ". Words are what \S+ matches, but found
# by replacing these with " " and splitting on it: about 2x faster in polars than the regex.
WHITESPACE = (
    *"\t\n\v\f\r\x85\xa0\u1680",
    *map(chr, range(0x2000, 0x200B)),
    *"\u2028\u2029\u202f\u205f\u3000",
)
# Scripts written without spaces between words, and their mean characters per word: Chinese
# words average about 1.5 characters (segmented corpora), Japanese ones a little more; Thai, Lao,
# Khmer and Burmese words about 4 code points (vowel and tone marks included).
UNSPACED = ((r"[\p{Han}\p{Hiragana}\p{Katakana}]", 1.5), (r"[\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]", 4.0))


@dataclass(frozen=True)
class Check:
    reason: str
    drop: pl.Expr  # true = remove the record (null counts as keep)
    detail: pl.Expr  # a string; evaluated only on removed records


def _words(text: pl.Expr) -> pl.Expr:
    """The whitespace-separated words of each text, as a list."""
    spaced = text.str.replace_many(list(WHITESPACE), [" "] * len(WHITESPACE))
    return spaced.str.split(" ").list.eval(pl.element().filter(pl.element() != ""))


def with_words(texts: pl.DataFrame) -> pl.DataFrame:
    return texts if WORDS in texts.columns else texts.with_columns(_words(pl.col(CONTENT)).alias(WORDS))


def word_count() -> pl.Expr:
    """Words per text of a texts table with WORDS: its whitespace-separated words, except that
    runs of unspaced scripts (CJK, Thai, ...) count their characters / UNSPACED's mean word
    length (at least one word a script), and tokens left without letters or digits (the
    full-width punctuation between such runs) do not count: min_words and max_words use it."""
    spaced = pl.col(WORDS).list.len()
    text = pl.col(CONTENT)
    chars = [text.str.count_matches(script) for script, _ in UNSPACED]
    unspaced = pl.sum_horizontal(
        pl.when(n > 0).then(pl.max_horizontal((n / per_word).floor(), 1)).otherwise(0)
        for n, (_, per_word) in zip(chars, UNSPACED, strict=True)
    )
    rest = text.str.replace_all("|".join(script for script, _ in UNSPACED), " ")
    mixed = rest.str.count_matches(r"\S*[\p{L}\p{N}]\S*") + unspaced
    return pl.when(pl.sum_horizontal(chars) > 0).then(mixed.cast(pl.UInt32)).otherwise(spaced)
