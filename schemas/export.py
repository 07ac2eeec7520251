"""The `export:` section of the run config: chat-formatted training sets from the kept records.

Validated like the rest of the config (unknown keys are errors). The output directory is the
caller's (the run directory's `export/`), not part of this section.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from schemas.base import Strict
from schemas.chat import TemplateName

ExportFormat = Literal["alpaca", "sharegpt", "openai", "preference"]
SpecialTokenAction = Literal["reject", "escape"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)


class ExportConfig(Strict):
    formats: list[ExportFormat] = Field(
        list(EXPORT_FORMATS),
        min_length=1,
        description="Files to write: alpaca.json, sharegpt.json, openai.jsonl (sft records),"
        " preference.jsonl (preference records).",
    )
    test_size: float = Field(0.1, gt=0, lt=1, description="Share of each set held out as its test split.")
    seed: int = Field(42, description="Seed of the train/test split.")
    chat_template: TemplateName | None = Field(
        None,
        description="null = the tokenizer's own template; else a named one (chatml, llama3, mistral,"
        " zephyr). Training renders with the same one.",
    )
    tokenizer: str | None = Field(
        None, description="Local tokenizer (directory or .gguf) for token lengths; null = bundled SmolLM2."
    )
    max_seq_length: int = Field(2048, ge=16, description="Token budget of one rendered conversation.")
    overlength: Literal["drop", "truncate"] = Field(
        "drop",
        description="Rows longer than max_seq_length: reject them (too_long), or keep them for"
        " truncation at train time.",
    )
    special_tokens: SpecialTokenAction = Field(
        "reject",
        description="A turn holding one of the tokenizer's special tokens (<|im_start|>, <|eot_id|>, ...):"
        " reject the record (special_token), or escape the token (a zero-width space after its first"
        " character) so it trains as plain text.",
    )

    @field_validator("formats")
    @classmethod
    def _no_repeats(cls, value: list[ExportFormat]) -> list[ExportFormat]:
        repeated = sorted({f for f in value if value.count(f) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {', '.join(repeated)}")
        return value


class ExportedSet(BaseModel):
    """What export wrote for one kind's DatasetDict (hf/sft, hf/preference): stats.json's
    `export.splits.<kind>`, read by the report, the dataset card, the CLI and training."""

    train: int = 0
    test: int = 0
    not_written: str | None = None  # why hf/<kind> was not written (no rows); None: written
    note: str | None = None  # about a written set, e.g. too few rows for a test split

    @property
    def rows(self) -> int:
        return self.train + self.test

    @property
    def written(self) -> bool:
        return self.not_written is None

    @model_validator(mode="before")
    @classmethod
    def _earlier_runs(cls, data: Any) -> Any:
        """Runs exported before this model wrote {"note": "no rows: not written"} and no counts."""
        if isinstance(data, dict) and "train" not in data and "not_written" not in data:
            return {"not_written": data.get("note") or "not written"}
        return data


# Why a set training needs is missing when the run's export gave no reason of its own.
NOT_EXPORTED = "not written: curate with an `export:` section first"
