"""Keyword checks: drop records whose text holds an excluded phrase (configured, from a file,
or the bundled refusal list)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from curation.filters.checks import WHITESPACE, Check
from schemas.config import KeywordFilter

if TYPE_CHECKING:
    from curation.filters.stage import Section, Work

REFUSAL_PHRASES = Path(__file__).parent.parent / "resources" / "refusal_phrases.txt"
CURLY_APOSTROPHE = "\u2019"


def keyword_section(cfg: KeywordFilter) -> Section:
    pattern = phrase_pattern(keyword_phrases(cfg))

    def section(work: Work) -> list[Check]:
        if pattern is None:
            return []
        text = _fold(pl.col(work.view(cfg.view)))
        phrase = text.str.extract(pattern, 0).str.replace_all(" +", " ")
        return [Check("excluded_keyword", text.str.contains(pattern), phrase)]

    return section


def _fold(text: pl.Expr) -> pl.Expr:
    """Lowercase, every space a " ", every curly apostrophe a straight one: keyword patterns
    then stay plain literals (a (?i) pattern with classes for spaces and quotes is 3x slower)."""
    spaces_and_quote = [*WHITESPACE, CURLY_APOSTROPHE]
    return text.str.to_lowercase().str.replace_many(spaces_and_quote, [" "] * len(WHITESPACE) + ["'"])


def keyword_phrases(cfg: KeywordFilter) -> list[str]:
    """The configured phrases: `exclude`, the `exclude_file` and, opted in, the refusal list."""
    phrases = list(cfg.exclude)
    if cfg.exclude_file:
        phrases += read_phrases(Path(cfg.exclude_file))
    if cfg.refusals:
        phrases += read_phrases(REFUSAL_PHRASES)
    return phrases


def read_phrases(path: Path) -> list[str]:
    """One phrase per line; blank lines and lines starting with # are skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def phrase_pattern(phrases: Iterable[str]) -> str | None:
    """One regex for all phrases, to search `_fold`ed text with (None if there are none).

    A phrase matches as whole words: \\b only at ends that are word characters (a \\b next to
    "!" or "'" would demand a word character beyond it), and a space in it matches any run of
    spaces. Longest first, so the reported match is the most specific one.
    """
    folded = {" ".join(p.lower().replace(CURLY_APOSTROPHE, "'").split()) for p in phrases} - {""}
    unique = sorted(folded, key=lambda p: (-len(p), p))
    if not unique:
        return None
    alternatives = []
    for phrase in unique:
        body = " +".join(pl.escape_regex(word) for word in phrase.split(" "))
        start = r"\b" if re.match(r"\w", phrase[0]) else ""
        end = r"\b" if re.match(r"\w", phrase[-1]) else ""
        alternatives.append(start + body + end)
    return "(?:" + "|".join(alternatives) + ")"
