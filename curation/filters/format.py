"""Format checks: answers with invalid JSON, unbalanced ``` fences or unparsable python code.

JSON is checked only where it is asked for or claimed, as answers open with `[` or `{` for many
other reasons (`[Verse 1]` lyrics, `[Your Name]` templates, Python lists, `{start article}`):
a ```json block always; a whole answer opening with `[` or `{` when a prompt turn of its record
(system or user) names JSON, or when the answer claims JSON by its own shape (JSON_SHAPED).
"""

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
WHOLE = "_whole"  # the whole answer is to be JSON (else only its ```json blocks)
FENCE_LINE = r"(?m)^[ \t]*```"
FENCED_BLOCK = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)
JSON_LANGS = ("json",)
PYTHON_LANGS = ("python", "python3", "py")
ASKS_JSON = r"(?i)\bjson\b"  # "JSON", "json format", "```json"; not "JSONL" (many documents)
PROMPT_ROLES = ("system", "user")
# An answer claims JSON by its shape when it opens an object with a double-quoted key (a tool
# call, even truncated or with Python's True/None inside), or when it is written in JSON's tokens
# alone (strings in double quotes, numbers, true/false/null, brackets, commas, colons), a string
# left open at the end included (cut off). Python lists and dicts ('single quotes', True) and
# JavaScript objects (unquoted keys) are neither, unless a prompt asks for JSON.
_STRING = r'"(?:[^"\\]|\\.)*'  # a double-quoted string, its closing quote not included
_TOKEN = rf'\s|{_STRING}"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|[\[\]{{}},:]'
JSON_SHAPED = rf'(?s)^\s*(?:\[\s*)?\{{\s*"|^(?:{_TOKEN})*(?:{_STRING})?$'


def format_section(cfg: FormatFilter) -> Section:
    def section(work: Work) -> list[Check]:
        answers = work.answers()
        text = pl.col(CONTENT)
        found: list[tuple[str, pl.DataFrame]] = []
        if cfg.json_:
            asked = _asks_json(work)
            whole = text.str.strip_chars_start().str.contains(r"^[\[{]") & (
                pl.col(ROW).is_in(asked.implode()) | text.str.contains(JSON_SHAPED)
            )
            fenced = text.str.contains(_fence_open(JSON_LANGS))
            # Raw documents are not answers: "[1]" citations and "[section]" headers abound.
            candidates = answers.filter(pl.col("side") != "text").with_columns(whole.alias(WHOLE))
            found.append(("invalid_json", _python_check(candidates.filter(whole | fenced), _json_error, WHOLE)))
        if cfg.code:
            fences = text.str.count_matches(FENCE_LINE)
            odd = pl.when(fences % 2 == 1).then(pl.format("{} ``` fence lines (odd)", fences))
            found.append(("unbalanced_code_fence", answers.select(ROW, odd.alias(VALUE))))
            # Raw documents are not answers either: their code blocks hold fragments, elisions and
            # doc-build directives ({!../docs_src/x.py!}); a paragraph is not bad for quoting them.
            has_python = text.str.contains(_fence_open(PYTHON_LANGS)) & (pl.col("side") != "text")
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


def _asks_json(work: Work) -> pl.Series:
    """The records a prompt turn of which (system or user) names JSON."""
    turns = work.turns()
    prompts = (pl.col("side") == "messages") & pl.col("role").is_in(PROMPT_ROLES)
    return turns.filter(prompts & pl.col(CONTENT).str.contains(ASKS_JSON))[ROW].unique()


def _python_check(texts: pl.DataFrame, error: Callable[..., str | None], *args: str) -> pl.DataFrame:
    """(ROW, VALUE = error or null) for the candidate texts, the only rows that need Python;
    `error` gets each text and its values of the `args` columns."""
    values = zip(texts[CONTENT], *(texts[a] for a in args), strict=True)
    return texts.select(ROW, pl.Series(VALUE, [error(*v) for v in values], dtype=pl.String))


def _fenced(text: str, langs: tuple[str, ...]) -> list[str]:
    return [m.group(2) for m in FENCED_BLOCK.finditer(text) if m.group(1).lower() in langs]


def _json_error(text: str, whole: bool) -> str | None:
    documents = [text.strip()] if whole else []
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
