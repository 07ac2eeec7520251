"""The `validation:` section of the run config: Great Expectations checks of the exported sets.

Each entry of `suites` names an exported set (sft: alpaca/sharegpt/openai; preference:
preference.jsonl) whose expectation suite `schemas/gx_suites/<name>.json` runs on the kept
records of that kind. `fail` stops the run naming the failed expectations; `warn` only records
them in `RUN_DIR/validation/summary.json`. The bounds below fill the suites' `$PARAMETER`
placeholders; an expectation whose bound is null is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from schemas.base import Strict

SuiteName = Literal["sft", "preference"]
Severity = Literal["fail", "warn"]

SUITES_DIR = Path(__file__).resolve().parent / "gx_suites"


class SuiteConfig(Strict):
    severity: Severity = Field("fail", description="fail: the run stops; warn: recorded only.")


class ValidationConfig(Strict):
    suites: dict[SuiteName, SuiteConfig] = Field(
        default_factory=lambda: {"sft": SuiteConfig(), "preference": SuiteConfig()},
        min_length=1,
        description="Exported sets to check, each with a severity.",
    )
    min_words: int | None = Field(1, ge=0, description="Fewest words of any answer; null = unchecked.")
    max_chars: int | None = Field(20000, ge=1, description="Most characters of any answer; null = unchecked.")
    score_range: tuple[float, float] | None = Field(
        (1, 5),
        description="Bounds of jury scores (meta.jury.score; preference: the chosen and rejected"
        " answers' scores) where records carry one; null = unchecked. Match jury.scale_max.",
    )

    @model_validator(mode="after")
    def _ordered_range(self) -> ValidationConfig:
        if self.score_range is not None and self.score_range[0] > self.score_range[1]:
            raise ValueError("score_range: the lower bound is above the upper one")
        return self

    def parameters(self) -> dict[str, float | None]:
        """Values of the `$PARAMETER` placeholders the suite files use (None = leave it out)."""
        low, high = self.score_range if self.score_range is not None else (None, None)
        return {"min_words": self.min_words, "max_chars": self.max_chars, "score_min": low, "score_max": high}
