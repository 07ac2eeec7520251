"""The report's jury section: the judges' figures, failed ratings and their largest disagreements."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from curation.report.charts import bar_chart
from curation.report.records import excerpt, records_by_id, scan
from schemas.figures import JuryFigures

MAX_JURY_EXAMPLES = 5  # failed ratings and largest disagreements


def jury_section(
    stage: JuryFigures, ratings_path: Path, kept: pl.LazyFrame | None, rejected: pl.LazyFrame | None
) -> dict:
    """The jury stage's figures from stats.json, per-judge scores and examples from ratings.parquet."""
    bars = [(label, f"score {label}", float(count)) for label, count in stage.histogram.items()]
    ratings = scan(ratings_path)
    usage = stage.usage
    by_judge = _judge_ratings(ratings) if ratings is not None else {}
    return {
        "stage": stage,
        "chart": bar_chart(bars, "c-jury", "aggregated score") if bars else None,
        "judges": [
            {"name": name, **(usage[name].model_dump() if name in usage else {}), **by_judge.get(name, {})}
            for name in stage.judges or list(usage) or list(by_judge)
        ],
        "has_ratings": ratings is not None,
        "cost": sum(u.cost_usd for u in usage.values()) if usage else None,
        "distill": stage.distill.model_dump() if stage.distill else None,
        "failed": _failed_ratings(ratings) if ratings is not None else [],
        "disagreements": _disagreements(ratings, kept, rejected) if ratings is not None else [],
    }


def _judge_ratings(ratings: pl.LazyFrame) -> dict[str, dict]:
    score = pl.col("score")
    table = ratings.group_by("judge").agg(
        pl.len().alias("rated"),
        score.null_count().alias("failed_ratings"),
        score.mean().alias("mean"),
        score.std().alias("std"),
        (pl.col("attempts") > 1).sum().alias("reasked"),
    )
    return {row.pop("judge"): row for row in table.collect().to_dicts()}


def _failed_ratings(ratings: pl.LazyFrame) -> list[dict]:
    failed = ratings.filter(pl.col("score").is_null()).head(MAX_JURY_EXAMPLES).collect()
    return [{**r, "raw": excerpt(r.get("raw"))} for r in failed.to_dicts()]


def _disagreements(ratings: pl.LazyFrame, kept: pl.LazyFrame | None, rejected: pl.LazyFrame | None) -> list[dict]:
    """The records the judges disagree on most (largest max - min score)."""
    spreads = (
        ratings.filter(pl.col("score").is_not_null())
        .group_by("id")
        .agg((pl.col("score").max() - pl.col("score").min()).alias("spread"), pl.struct("judge", "score").alias("scores"))
        .filter(pl.col("spread") > 0)
        .sort(["spread", "id"], descending=[True, False])
        .head(MAX_JURY_EXAMPLES)
        .collect()
    )
    records = records_by_id(kept, rejected, spreads["id"].to_list())
    return [
        {"id": r["id"], "spread": r["spread"], "scores": {s["judge"]: s["score"] for s in r["scores"]},
         "record": records.get(r["id"])}
        for r in spreads.iter_rows(named=True)
    ]
