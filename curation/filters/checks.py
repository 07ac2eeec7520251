"""What the filter stage and its sections share: the Check, helper-column names, word splitting."""

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
