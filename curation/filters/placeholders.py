"""Placeholder checks: answers that are only a placeholder (`<noinput>`, `N/A`, nothing but
punctuation or invisible characters) and answers that hold a leaked generation template (a new
`Instruction:` with its `Input:` / `Output:` after the answer, as self-instruct and Alpaca
generation prompts are written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from curation.filters.checks import CONTENT, ROW, Check
from schemas.config import PlaceholderFilter

if TYPE_CHECKING:
    from curation.filters.stage import Section, Work

# Punctuation, <>, Markdown markers (` ~), whitespace and format characters (zero-width spaces): an
# answer of nothing else says nothing ("```", ",_"). Emoji (symbols) and digits are answers ("👍", "50").
_FILLER = r"[\p{P}\s\p{Cf}<>`~]*"
# Alpaca's <noinput>/<nooutput> in any spelling ("No input", "[no output]") and N/A, alone.
PLACEHOLDER = rf"(?i)^{_FILLER}(?:no[\s_-]*(?:input|output)|n/a)?{_FILLER}$"
# A placeholder is a token: longer answers without a letter are ASCII art (a drawing asked for)
# or loops, which the repetition rules judge.
PLACEHOLDER_MAX_CHARS = 20
# A template field at a line start, as generation prompts write them: "9. Instruction:",
# "### Instruction:", "Input:", "2. Output:", "### Response:". "Instructions:" (a recipe) is not one.
_FIELD = r"(?mi)^[ \t]*(?:#+[ \t]*)?(?:\d+\.[ \t]*)?{}[ \t]*:"
INSTRUCTION_FIELD = _FIELD.format("instruction")
OTHER_FIELD = _FIELD.format("(?:input|output|response)")


def placeholder_section(cfg: PlaceholderFilter) -> Section:
    def section(work: Work) -> list[Check]:
        answers = work.answers()
        text = pl.col(CONTENT)
        found: list[tuple[str, pl.Expr]] = []
        if cfg.placeholder:
            shown = text.str.strip_chars().str.replace_all(r"\p{Cf}", "<invisible>").str.slice(0, 40)
            placeholder = (text.str.strip_chars().str.len_chars() <= PLACEHOLDER_MAX_CHARS) & text.str.contains(PLACEHOLDER)
            found.append(("placeholder_answer", pl.when(placeholder).then(
                pl.format("answer is only a placeholder: '{}'", shown))))
        if cfg.template:
            # A worked example ("Input: [1, 2]\nOutput: 3") has fields but no new instruction;
            # a leak starts a new task record. Raw documents may document such formats.
            instructions = text.str.count_matches(INSTRUCTION_FIELD)
            fields = text.str.count_matches(OTHER_FIELD)
            leaked = (pl.col("side") != "text") & (instructions > 0) & (fields > 0)
            found.append(("leaked_template", pl.when(leaked).then(
                pl.format("{} Instruction: and {} Input:/Output:/Response: fields at line starts", instructions, fields))))
        checks = []
        for reason, value in found:
            column = f"_{reason}"
            # A record fails if any of its answers does; the detail is the first such answer's.
            work.add(
                answers.select(ROW, value.alias(column))
                .drop_nulls(column)
                .group_by(ROW, maintain_order=True)
                .agg(pl.col(column).first())
            )
            checks.append(Check(reason, pl.col(column).is_not_null(), pl.col(column)))
        return checks

    return section
