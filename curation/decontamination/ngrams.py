"""Words and word n-gram hashes after normalisation, shared by benchmark texts and records.

Normalisation: Unicode NFKC, lowercase, and words are the runs of word characters (`\\w+`), so
punctuation and any run of whitespace only separate words ("Janet's" and "janet s" are the same
two words). An n-gram is a 64-bit hash: the sum of its word hashes times powers of a prime (mod
2^64), computed for every position of many texts at once in numpy.
"""

from __future__ import annotations

import numpy as np
import polars as pl

PRIME = 1_000_003
HASH_SEED = 0x5EED  # polars' word hash: stable for a polars version (part of the index cache key)


def normalised_words(text: pl.Expr) -> pl.Expr:
    """The normalised words of each text, as a list of strings."""
    return text.fill_null("").str.normalize("NFKC").str.to_lowercase().str.extract_all(r"\w+")


def word_hashes(words: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Every word's 64-bit hash, texts one after another, and where each text starts (len + 1)."""
    lengths = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = words.explode().drop_nulls()
    hashes = flat.hash(HASH_SEED).to_numpy() if len(flat) else np.zeros(0, np.uint64)
    return np.ascontiguousarray(hashes, np.uint64), np.concatenate([[0], np.cumsum(lengths)])


def gram_hashes(hashes: np.ndarray, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The hash of every n-gram inside one text, and the flat position of its first word."""
    total = len(hashes) - n + 1
    if total <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    key = hashes[:total].copy()
    for j in range(1, n):
        key += hashes[j : j + total] * np.uint64(pow(PRIME, j, 2**64))  # wraps mod 2^64
    # An n-gram is inside one text when its last word is in the same text as its first.
    text_of = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    position = np.flatnonzero(text_of[:total] == text_of[n - 1 : n - 1 + total])
    return key[position], position
