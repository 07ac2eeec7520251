"""The filter stage: datatrove-style quality checks, vectorised with polars.

A check is a reason, a boolean "drop" expression and a detail expression. The stage adds the
helper columns the configured sections need (text views, counts, per-turn figures), then labels
each record with the first failing check, in config order: length, keywords, format, repetition.
Details are computed only for the removed records. Python runs per text only where polars
cannot: the tokenizer (one batch call) and json.loads / ast.parse on the few answers that hold
JSON or fenced python code.
"""

from __future__ import annotations

import ast
import json
import os
import re
import textwrap
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from curation.core.engine import Engine, LocalEngine
from curation.models import load_tokenizer
from curation.core.stage import Stage, StageResult, split_rejects
from curation.core.text import text_view
from schemas.config import (
    Bounds,
    Filters,
    FormatFilter,
    KeywordFilter,
    LengthFilter,
    RepetitionFilter,
    TextView,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

STAGE = "filters"
REFUSAL_PHRASES = Path(__file__).parent / "resources" / "refusal_phrases.txt"

ROW = "_row"  # input position: the key of every helper table
CONTENT = "_content"  # in a texts table (ROW, CONTENT[, WORDS]): one text of a record
WORDS = "_words"  # its words
VALUE = "_value"  # a format check's finding per answer: the error, or null
UNITS = ("words", "chars", "tokens")
# Unicode White_Space (what regex \s matches) besides " ". Words are what \S+ matches, but found
# by replacing these with " " and splitting on it: about 2x faster in polars than the regex.
WHITESPACE = (
    *"\t\n\v\f\r\x85\xa0\u1680",
    *map(chr, range(0x2000, 0x200B)),
    *"\u2028\u2029\u202f\u205f\u3000",
)
CURLY_APOSTROPHE = "\u2019"

FENCE_LINE = r"(?m)^[ \t]*```"
FENCED_BLOCK = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)
PARALLEL_MIN_ROWS = 2_000  # below this, one slice (a 10k-row shard on 2 threads: 0.40 -> 0.24 s)
JSON_LANGS = ("json",)
PYTHON_LANGS = ("python", "python3", "py")


@dataclass(frozen=True)
class Check:
    reason: str
    drop: pl.Expr  # true = remove the record (null counts as keep)
    detail: pl.Expr  # a string; evaluated only on removed records


class Work:
    """The records of one run and the helper columns the sections add, keyed by ROW.

    Helpers live in a frame of their own, so joins and the final labelling never touch the
    records' (large, nested) columns.
    """

    def __init__(self, records: pl.DataFrame) -> None:
        self.records = records.with_row_index(ROW)
        self.frame = self.records.select(ROW)
        self._turns: pl.DataFrame | None = None
        self._texts: dict[str, pl.DataFrame] = {}

    def view(self, view: TextView) -> str:
        """Add the text view column once; return its name."""
        name = f"_text_{view}"
        if name not in self.frame.columns:
            self.frame = self.frame.with_columns(
                self.records.select(text_view(view).alias(name)).to_series()
            )
        return name

    def add(self, per_row: pl.DataFrame) -> None:
        """Join per-record figures (ROW + columns); records without a row get nulls (= keep)."""
        self.frame = self.frame.join(per_row, on=ROW, how="left", maintain_order="left")

    def texts(self, view: TextView = "all", words: bool = False) -> pl.DataFrame:
        """A text view as a texts table; its words are split at most once per run and view,
        as they are costly and both length and repetition use them."""
        if view not in self._texts:
            name = self.view(view)  # before reading self.frame, which it extends
            self._texts[view] = self.frame.select(ROW, pl.col(name).alias(CONTENT))
        if words:
            self._texts[view] = _with_words(self._texts[view])
        return self._texts[view]

    def turns(self) -> pl.DataFrame:
        """One row per turn (ROW, kind, side, role, CONTENT); a raw record's text is side "text"."""
        if self._turns is None:
            turn = pl.col("turn").struct
            sides = [
                self.records.select(ROW, "kind", pl.lit(side).alias("side"), pl.col(side).alias("turn"))
                .explode("turn")
                .drop_nulls("turn")
                .select(ROW, "kind", "side", turn.field("role"), turn.field("content").alias(CONTENT))
                for side in ("messages", "chosen", "rejected")
            ]
            raw = self.records.filter(pl.col("kind") == "raw").select(
                ROW,
                "kind",
                pl.lit("text").alias("side"),
                pl.lit(None, pl.String).alias("role"),
                pl.col("text").alias(CONTENT),
            )
            self._turns = pl.concat([*sides, raw])
        return self._turns

    def answers(self) -> pl.DataFrame:
        """The answers format checks look at: sft assistant turns, preference `chosen`, raw text."""
        turns = self.turns()
        sft_answer = (
            (pl.col("kind") == "sft") & (pl.col("side") == "messages") & (pl.col("role") == "assistant")
        )
        return turns.filter(sft_answer | pl.col("side").is_in(["chosen", "text"]))


Section = Callable[[Work], list[Check]]


def build_filter_stage(cfg: Filters, engine: Engine | None = None) -> Stage:
    """The `filters` stage; only configured sections check anything. Slow setup (tokenizer,
    phrase files) happens here, once, so a bad path fails before any records are read.
    Rows are judged independently: `engine` labels partitions of them (default: this process)."""
    sections: list[Section] = []
    if cfg.length:
        sections.append(_length_section(cfg.length))
    if cfg.keywords:
        sections.append(_keyword_section(cfg.keywords))
    if cfg.format:
        sections.append(_format_section(cfg.format))
    if cfg.repetition:
        sections.append(_repetition_section(cfg.repetition))

    def label(records: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
        work = Work(records)
        checks = [check for section in sections for check in section(work)]  # extends work.frame
        return _label(work.frame, checks)

    def label_on_threads(records: pl.DataFrame) -> list[tuple[pl.Series, pl.Series]]:
        # Most list expressions run on one core, so slices labelled on parallel threads (polars
        # releases the GIL) use every core.
        slices = records.iter_slices(max(PARALLEL_MIN_ROWS, -(-records.height // _threads())))
        with ThreadPoolExecutor(_threads()) as pool:
            return list(pool.map(label, slices))

    def run(records: pl.DataFrame) -> StageResult:
        labels = [lab for part in (engine or LocalEngine()).map(label_on_threads, records, STAGE) for lab in part]
        reason = pl.concat([r for r, _ in labels]) if labels else pl.Series([], dtype=pl.String)
        detail = pl.concat([d for _, d in labels]) if labels else pl.Series([], dtype=pl.String)
        return split_rejects(records, STAGE, reason, detail)

    return Stage(name=STAGE, run=run, streams=True)


def _threads() -> int:
    return max(1, min(os.cpu_count() or 1, pl.thread_pool_size()))


def _label(frame: pl.DataFrame, checks: list[Check]) -> tuple[pl.Series, pl.Series]:
    """Per record: the reason of the first failing check (null = keep) and its detail."""
    none = pl.repeat(None, frame.height, dtype=pl.String, eager=True)
    if not checks:
        return none, none
    reason = frame.select(_first_failing(checks, lambda c: pl.lit(c.reason))).to_series()
    flagged = reason.is_not_null()
    detail = (
        frame.filter(flagged)
        .select(_first_failing(checks, lambda c: c.detail.cast(pl.String)))
        .to_series()
    )
    return reason, none.scatter(flagged.arg_true(), detail)


def _first_failing(checks: list[Check], value: Callable[[Check], pl.Expr]) -> pl.Expr:
    chain = pl.when(checks[0].drop).then(value(checks[0]))
    for check in checks[1:]:
        chain = chain.when(check.drop).then(value(check))
    return chain.otherwise(pl.lit(None, pl.String))


def _words(text: pl.Expr) -> pl.Expr:
    """The whitespace-separated words of each text, as a list."""
    spaced = text.str.replace_many(list(WHITESPACE), [" "] * len(WHITESPACE))
    return spaced.str.split(" ").list.eval(pl.element().filter(pl.element() != ""))


def _with_words(texts: pl.DataFrame) -> pl.DataFrame:
    return texts if WORDS in texts.columns else texts.with_columns(_words(pl.col(CONTENT)).alias(WORDS))


# --- length ---------------------------------------------------------------------------------


def _length_section(cfg: LengthFilter) -> Section:
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
        texts = _with_words(texts)
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
        return pl.col(WORDS).list.len()
    if unit == "chars":
        return pl.col(CONTENT).str.len_chars()
    assert tokenizer is not None  # loaded whenever a token bound is set
    # One batched call: the fast tokenizer spreads the batch over all cores.
    batch = texts[CONTENT].to_list()
    encoded = tokenizer(batch, add_special_tokens=False, return_length=True, return_attention_mask=False)
    return pl.lit(pl.Series(encoded["length"], dtype=pl.UInt32))


# --- keywords -------------------------------------------------------------------------------


def _keyword_section(cfg: KeywordFilter) -> Section:
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


# --- format ---------------------------------------------------------------------------------


def _format_section(cfg: FormatFilter) -> Section:
    def section(work: Work) -> list[Check]:
        answers = work.answers()
        text = pl.col(CONTENT)
        found: list[tuple[str, pl.DataFrame]] = []
        if cfg.json_:
            starts_like_json = text.str.strip_chars_start().str.contains(r"^[\[{]")
            looks_like_json = starts_like_json | text.str.contains(_fence_open(JSON_LANGS))
            # Raw documents are not answers: "[1]" citations and "[section]" headers abound.
            is_answer = pl.col("side") != "text"
            found.append(
                ("invalid_json", _python_check(answers.filter(is_answer & looks_like_json), _json_error))
            )
        if cfg.code:
            fences = text.str.count_matches(FENCE_LINE)
            odd = pl.when(fences % 2 == 1).then(pl.format("{} ``` fence lines (odd)", fences))
            found.append(("unbalanced_code_fence", answers.select(ROW, odd.alias(VALUE))))
            has_python = text.str.contains(_fence_open(PYTHON_LANGS))
            found.append(("unparsable_code", _python_check(answers.filter(has_python), _python_error)))
        checks = []
        for reason, errors in found:
            column = f"_{reason}"
            # A record fails if any of its answers does; the detail is the first answer's error.
            work.add(
                errors.drop_nulls(VALUE)
                .group_by(ROW, maintain_order=True)
                .agg(pl.col(VALUE).first().alias(column))
            )
            checks.append(Check(reason, pl.col(column).is_not_null(), pl.col(column)))
        return checks

    return section


def _fence_open(langs: tuple[str, ...]) -> str:
    return r"(?mi)^[ \t]*```[ \t]*(?:" + "|".join(langs) + r")\b"


def _python_check(texts: pl.DataFrame, error: Callable[[str], str | None]) -> pl.DataFrame:
    """(ROW, VALUE = error or null) for the candidate texts, the only rows that need Python."""
    return texts.select(ROW, pl.Series(VALUE, [error(t) for t in texts[CONTENT]], dtype=pl.String))


def _fenced(text: str, langs: tuple[str, ...]) -> list[str]:
    return [m.group(2) for m in FENCED_BLOCK.finditer(text) if m.group(1).lower() in langs]


def _json_error(text: str) -> str | None:
    stripped = text.strip()
    documents = [stripped] if stripped.startswith(("{", "[")) else []
    for document in documents + _fenced(text, JSON_LANGS):
        try:
            json.loads(document)
        except json.JSONDecodeError as exc:
            return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        except RecursionError:
            return "nested too deeply"
    return None


def _python_error(text: str) -> str | None:
    for block in _fenced(text, PYTHON_LANGS):
        try:
            with warnings.catch_warnings():  # invalid escapes etc. warn but still parse
                warnings.simplefilter("ignore")
                ast.parse(textwrap.dedent(block))
        except SyntaxError as exc:
            return f"{exc.msg} (line {exc.lineno} of a python block)" if exc.lineno else exc.msg
        except (ValueError, RecursionError, MemoryError) as exc:  # null bytes (some versions), nesting
            return f"{type(exc).__name__} {exc}".strip()
    return None


# --- repetition -----------------------------------------------------------------------------
# The figures are computed in steps, one select each, so every step's columns are materialised:
# polars would recompute a sub-expression that several expressions share.


def _repetition_section(cfg: RepetitionFilter) -> Section:
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
