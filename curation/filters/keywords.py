"""Keyword checks: drop records whose text holds an excluded phrase (configured, from a file,
or the bundled refusal list)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from ahocorasick_rs import AhoCorasick, MatchKind

from curation.filters.checks import CONTENT, ROW, WHITESPACE, Check
from schemas.config import KeywordFilter, TextView

if TYPE_CHECKING:
    from curation.filters.stage import Section, Work

REFUSAL_PHRASES = Path(__file__).parent.parent / "resources" / "refusal_phrases.txt"
CURLY_APOSTROPHE = "\u2019"
KEYWORD = "_keyword"  # prefix of the Work columns of the phrase found (one per text view)
MARK = "\x01"  # a word boundary in marked text: a control character, removed from texts at ingest
_WORD = re.compile(r"\w")
# Up to this many phrases the first pass is polars' `contains_any` (native, but its automaton is
# rebuilt per call: ~3 ms per 1,000 phrases); past it, the automaton built once, at the price of
# handing each text to Python (~9 us a document).
POLARS_PREFILTER_MAX = 20_000


def keyword_section(cfg: KeywordFilter) -> Section:
    # One matcher per text view: the configured phrases on `view`, the refusal list on
    # `refusals_view` (the same matcher when the views agree).
    by_view: dict[TextView, list[str]] = {}
    for view, phrases in ((cfg.view, configured_phrases(cfg)), (cfg.refusals_view, refusal_phrases(cfg))):
        if phrases:
            by_view.setdefault(view, []).extend(phrases)
    matchers = {view: PhraseMatcher(phrases) for view, phrases in by_view.items()}

    def section(work: Work) -> list[Check]:
        if not matchers:
            return []
        found = []
        for i, (view, matcher) in enumerate(matchers.items()):
            texts = work.texts(view)
            column = f"{KEYWORD}{i}"
            hits = matcher.first(texts.select(_fold(pl.col(CONTENT))).to_series())
            work.add(texts.select(ROW).with_columns(hits.alias(column)))
            found.append(pl.col(column))
        phrase = pl.coalesce(found)
        return [Check("excluded_keyword", phrase.is_not_null(), phrase)]

    return section


def _fold(text: pl.Expr) -> pl.Expr:
    """Lowercase, every space a " ", every curly apostrophe a straight one: keyword patterns
    then stay plain literals (a (?i) pattern with classes for spaces and quotes is 3x slower)."""
    spaces_and_quote = [*WHITESPACE, CURLY_APOSTROPHE]
    return text.str.to_lowercase().str.replace_many(spaces_and_quote, [" "] * len(WHITESPACE) + ["'"])


def configured_phrases(cfg: KeywordFilter) -> list[str]:
    """`exclude` and the `exclude_file`'s phrases."""
    phrases = list(cfg.exclude)
    if cfg.exclude_file:
        phrases += read_phrases(Path(cfg.exclude_file))
    return phrases


def refusal_phrases(cfg: KeywordFilter) -> list[str]:
    return read_phrases(REFUSAL_PHRASES) if cfg.refusals else []


def read_phrases(path: Path) -> list[str]:
    """One phrase per line; blank lines and lines starting with # are skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class PhraseMatcher:
    """Finds phrases in `_fold`ed text as whole words, with one Aho-Corasick automaton
    (ahocorasick-rs) built once per process, not one regex of all phrases: a regex of 100k
    phrases exceeds the regex size limit, a list of a million takes gigabytes, and polars'
    `str.extract_many` rebuilds its automaton on every call (~15 s a shard for a million phrases).

    A phrase matches as whole words: a word boundary (\\b) only at ends that are word
    characters (a \\b next to "!" or "'" would demand a word character beyond it), and a space
    in it matches any run of spaces. The match reported is the leftmost, and the longest phrase
    there: what a regex alternation of the phrases, longest first, finds.
    """

    def __init__(self, phrases: Iterable[str]) -> None:
        folded = {" ".join(p.lower().replace(CURLY_APOSTROPHE, "'").split()) for p in phrases} - {""}
        self.phrases = sorted(folded, key=lambda p: (-len(p), p))
        # Each phrase with a MARK at every word boundary inside it, and at an end that is a word
        # character; text marked the same way then holds a phrase's marked form exactly where
        # the phrase occurs with boundaries at those ends.
        inner = pl.Series(self.phrases, dtype=pl.String).str.replace_all(r"\b", MARK).str.strip_chars(MARK)
        self.marked = [
            (MARK if _WORD.match(p[0]) else "") + body + (MARK if _WORD.match(p[-1]) else "")
            for p, body in zip(self.phrases, inner.to_list(), strict=True)
        ]
        self._automata: tuple[AhoCorasick, AhoCorasick] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_automata": None}  # not picklable: a Ray worker builds its own

    def first(self, texts: pl.Series) -> pl.Series:
        """The first phrase in each `_fold`ed text (null: none). Texts that hold no phrase's
        characters at all (most) are passed over by the plain automaton; only the others are
        marked (a regex pass) and searched for the phrases as whole words."""
        if self._automata is None:
            self._automata = (AhoCorasick(self.phrases), AhoCorasick(self.marked, matchkind=MatchKind.LeftmostLongest))
        plain, whole_words = self._automata
        spaced = texts.str.replace_all(" {2,}", " ")
        if len(self.phrases) <= POLARS_PREFILTER_MAX:
            hit = spaced.str.contains_any(self.phrases).fill_null(False)
        else:
            hit = pl.Series([t is not None and bool(plain.find_matches_as_indexes(t)) for t in spaced], dtype=pl.Boolean)
        find = whole_words.find_matches_as_indexes
        marked = spaced.filter(hit).str.replace_all(r"\b", MARK)
        found = [self.phrases[m[0][0]] if (m := find(text)) else None for text in marked]
        return pl.repeat(None, len(texts), dtype=pl.String, eager=True).scatter(hit.arg_true(), pl.Series(found, dtype=pl.String))
