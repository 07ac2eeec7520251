"""A stage's output as the benchmarks read it, typed: the frames of a run on an in-memory frame,
and the stage's own figures as its model (schemas.figures).

StageResult and IngestResult are typed for every run (a Corpus in, or ingest with `out`, gives
Corpora; figures are the base model): these narrow them, and fail loudly if that ever differs.
"""

from __future__ import annotations

import polars as pl

from curation.core.corpus import Source
from curation.core.stage import StageResult
from schemas.figures import F


def frame(source: Source) -> pl.DataFrame:
    """Records or rejects of a run on a frame (curation.core.stage, ingest without `out`): a frame."""
    if not isinstance(source, pl.DataFrame):
        raise TypeError(f"expected a DataFrame, got {type(source).__name__}")
    return source


def figures(result: StageResult, kind: type[F]) -> F:
    """The stage's figures as its model `kind` (TypeError for another stage's)."""
    if not isinstance(result.figures, kind):
        raise TypeError(f"figures are {type(result.figures).__name__}, not {kind.__name__}")
    return result.figures
