"""The canonical record that flows through every stage, and the rejects table.

One record type for all stages (datatrove's Document): ingest turns every input shape into it,
filters and dedup only drop rows, later stages add typed columns. Stages work on polars
DataFrames with `RECORD_SCHEMA`; the pydantic models validate rows at the ingest boundary.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Role = Literal["system", "user", "assistant", "tool"]
Kind = Literal["raw", "sft", "preference"]

MESSAGE_DTYPE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES_DTYPE = pl.List(MESSAGE_DTYPE)

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String,
    "source": pl.String,  # "path:line" (line-based files) or "path#row" (tables, arrays)
    "kind": pl.String,
    "text": pl.String,  # raw documents
    "messages": MESSAGES_DTYPE,  # sft: the conversation; preference: the prompt turns
    "chosen": MESSAGES_DTYPE,  # preference: the preferred assistant turn(s)
    "rejected": MESSAGES_DTYPE,
    "meta": pl.String,  # JSON object with shape-specific extras (e.g. oasst ranks)
}

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String,
    "source": pl.String,
    "stage": pl.String,
    "reason": pl.String,
    "detail": pl.String,
    "duplicate_of": pl.String,
    # The record itself, so reports can show what was removed. `raw` holds the input text of
    # rows that never became a record (malformed input); the canonical columns are null then.
    "kind": pl.String,
    "text": pl.String,
    "messages": MESSAGES_DTYPE,
    "chosen": MESSAGES_DTYPE,
    "rejected": MESSAGES_DTYPE,
    "meta": pl.String,
    "raw": pl.String,
}


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty content")
        return value


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    source: str
    kind: Kind
    text: str | None = None
    messages: list[Message] | None = None
    chosen: list[Message] | None = None
    rejected: list[Message] | None = None
    meta: dict[str, Any] = {}

    @model_validator(mode="after")
    def _shape_matches_kind(self) -> Record:
        if self.kind == "raw":
            if self.text is None or not self.text.strip():
                raise ValueError("raw record needs non-empty text")
        elif self.kind == "sft":
            if not self.messages:
                raise ValueError("sft record needs messages")
            if not any(m.role == "assistant" for m in self.messages):
                raise ValueError("sft record has no assistant turn")
            if not any(m.role == "user" for m in self.messages):
                raise ValueError("sft record has no user turn")
        else:
            if not self.messages or self.messages[-1].role != "user":
                raise ValueError("preference prompt must end with a user turn")
            for side in ("chosen", "rejected"):
                turns = getattr(self, side)
                if not turns or any(m.role != "assistant" for m in turns):
                    raise ValueError(f"preference {side} must be assistant turn(s)")
            if _contents(self.chosen) == _contents(self.rejected):
                raise ValueError("chosen and rejected are identical")
        return self

    def to_row(self) -> dict[str, Any]:
        row = self.model_dump(exclude={"meta"})
        row["meta"] = meta_json(self.meta)
        return row


def meta_json(meta: dict[str, Any]) -> str:
    """The one spelling of `meta` every stage writes: compact JSON with sorted keys."""
    return orjson.dumps(meta, option=orjson.OPT_SORT_KEYS).decode()


def _contents(turns: list[Message] | None) -> list[str]:
    return [m.content.strip() for m in turns or []]


def records_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A DataFrame in RECORD_SCHEMA from `Record.to_row()`-shaped dicts.

    Built column-wise through Arrow (several times faster than row-wise on nested messages):
    Arrow infers the types, all-null columns come out as null, and the cast sets the schema.
    """
    arrays = {name: pa.array([r[name] for r in rows]) for name in RECORD_SCHEMA}
    return pl.from_arrow(pa.table(arrays)).cast(RECORD_SCHEMA)  # type: ignore[union-attr]


def rejects_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A DataFrame in REJECT_SCHEMA; missing keys are null."""
    return pl.DataFrame([{k: r.get(k) for k in REJECT_SCHEMA} for r in rows], schema=REJECT_SCHEMA)
