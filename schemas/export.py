"""The `export:` section of the run config: chat-formatted training sets from the kept records.

Validated like the rest of the config (unknown keys are errors). The output directory is the
caller's (the run directory's `export/`), not part of this section.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator

from schemas.base import Strict
from schemas.chat import TemplateName

ExportFormat = Literal["alpaca", "sharegpt", "openai", "preference"]
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

    @field_validator("formats")
    @classmethod
    def _no_repeats(cls, value: list[ExportFormat]) -> list[ExportFormat]:
        repeated = sorted({f for f in value if value.count(f) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {', '.join(repeated)}")
        return value
