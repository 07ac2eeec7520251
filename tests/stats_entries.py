"""Stage entries of stats.json for tests that need a run's stats without running it."""

from __future__ import annotations

from curation.core.stats import StageStats
from schemas.export import ExportedSet
from schemas.figures import ExportFigures, SpecialTokenFigures


def export_entry(rows_in: int, out: int, splits: dict[str, ExportedSet]) -> StageStats:
    """An export stage entry with these sets (hf/<kind>) and no files or token figures."""
    figures = ExportFigures(
        chat_template="tokenizer", tokenizer="tokenizer", max_seq_length=512, overlength="drop",
        special_tokens=SpecialTokenFigures(action="reject", records=0, escaped=0),
        files={}, splits=splits, tokens={}, not_exported={},
    )
    return StageStats(stage="export", rows_in=rows_in, out=out, removed=rows_in - out, figures=figures)
