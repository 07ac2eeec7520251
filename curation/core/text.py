"""Text views of a record, as polars expressions, shared by filters and dedup."""

from __future__ import annotations

import polars as pl

from schemas.config import TextView


def _turns(column: str, role: str | None, but: str | None = None) -> pl.Expr:
    turns = pl.col(column)
    if role is not None:
        turns = turns.list.eval(pl.element().filter(pl.element().struct.field("role") == role))
    if but is not None:
        turns = turns.list.eval(pl.element().filter(pl.element().struct.field("role") != but))
    return turns.list.eval(pl.element().struct.field("content")).list.join("\n")


def text_view(view: TextView = "all") -> pl.Expr:
    """One string per record: raw text, or the chosen turns of a conversation joined by newlines.

    - all: every turn (for preference rows: the prompt and the chosen answer)
    - no_system: every turn but system prompts (a shared system prompt says nothing of a record)
    - user: user turns only; assistant: assistant turns (and `chosen` for preference rows)
    """
    role = {"all": None, "no_system": None, "user": "user", "assistant": "assistant"}[view]
    prompt = _turns("messages", role, "system" if view == "no_system" else None)
    answer = _turns("chosen", None)
    preference = {
        "all": pl.concat_str([prompt, answer], separator="\n"),
        "no_system": pl.concat_str([prompt, answer], separator="\n"),
        "user": prompt,
        "assistant": answer,
    }[view]
    return (
        pl.when(pl.col("kind") == "raw")
        .then(pl.col("text"))
        .when(pl.col("kind") == "preference")
        .then(preference)
        .otherwise(prompt)
        .fill_null("")
        .alias(f"text_{view}")
    )

