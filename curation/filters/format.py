"""Format checks: answers with invalid JSON, unbalanced ``` fences or unparsable python code."""

from __future__ import annotations

import ast
import json
import re
import textwrap
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl

from curation.filters.checks import CONTENT, ROW, Check
from schemas.config import FormatFilter

if TYPE_CHECKING:
    from curation.filters.stage import Section, Work

VALUE = "_value"  # a format check's finding per answer: the error, or null
FENCE_LINE = r"(?m)^[ \t]*```"
FENCED_BLOCK = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)
JSON_LANGS = ("json",)
PYTHON_LANGS = ("python", "python3", "py")


def format_section(cfg: FormatFilter) -> Section:
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
