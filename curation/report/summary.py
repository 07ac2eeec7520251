"""The run summary read from a run directory (never from live DataFrames): the funnel as markdown,
removals per stage and reason, the largest duplicate clusters, the data hygiene figures and the
jury's scores as table rows. The curate flow publishes them as Prefect artifacts (flows/artifacts.py)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from curation.core.stats import RunStats
from schemas.figures import DecontaminationFigures, FiltersFigures, JuryFigures, PiiFigures

TOP_CLUSTERS = 10
EXCERPT_CHARS = 120


def tables(stats: RunStats, run_dir: Path) -> dict[str, tuple[list[dict], str]]:
    """Every table of the summary by name (an artifact key's, flows/artifacts.py): its rows and
    description, in the order they are shown; one with nothing to show is left out."""
    found = {"removals": (removal_rows(stats), "records removed, per stage and reason")}
    if clusters := duplicate_clusters(run_dir):
        found["duplicates"] = (clusters, f"largest {TOP_CLUSTERS} duplicate clusters")
    found.update(hygiene_tables(stats))
    jury = stats.figures(JuryFigures)
    if jury and jury.histogram:
        rows = [{"score": score, "records": n} for score, n in jury.histogram.items()]
        found["jury_scores"] = (rows, "aggregated jury scores (rounded)")
    return found


def hygiene_tables(stats: RunStats) -> dict[str, tuple[list[dict], str]]:
    """The data hygiene figures of the run as tables (only those of stages that ran)."""
    tables = {}
    decontamination, filters = stats.figures(DecontaminationFigures), stats.figures(FiltersFigures)
    pii = stats.figures(PiiFigures)
    if decontamination:
        rows = [{"benchmark": name, **figures.model_dump()} for name, figures in decontamination.benchmarks.items()]
        tables["contamination"] = (rows, "records that contain a benchmark text, per benchmark")
    if filters and filters.languages:
        rows = [{"language": lang, "records": n} for lang, n in filters.languages.items()]
        tables["languages"] = (rows, "the filter stage's input by detected language")
    if pii:
        rows = [{"kind": kind, "found": n} for kind, n in pii.found.items()]
        tables["pii"] = (rows, f"PII found ({pii.action}), per kind; never the values")
    return tables


def summary_markdown(stats: RunStats, run_dir: Path) -> str:
    t = stats.totals
    holds = stats.invariant is not None and stats.invariant.holds
    lines = [
        f"# curate: {Path(stats.config or run_dir).name}",
        "",
        f"Kept **{t.kept}** of {t.ingested} ingested records"
        + (f" (+{t.generated} generated)" if t.generated else "")
        + f"; {t.rejected} rejected. Invariant ingested + generated == kept + rejected:"
        f" {'holds' if holds else '**BROKEN**'}.",
        "",
        "| stage | in | out | removed | why |",
        "|---|---:|---:|---:|---|",
    ]
    for s in stats.stages:
        lines.append(f"| {s.stage} | {s.rows_in} | {s.out} | {s.removed} | {s.reasons_text() or '-'} |")
    report = (run_dir / "report.html").resolve()
    lines += [
        "",
        f"Run directory: `{run_dir}`",
        f"Report: [{report}]({report.as_uri()}) (file link: open it on the machine that ran the flow)",
    ]
    return "\n".join(lines)


def removal_rows(stats: RunStats) -> list[dict]:
    rows = [{"stage": s.stage, "reason": reason, "count": n} for s in stats.stages for reason, n in s.removed_by_reason.items()]
    return rows or [{"stage": "-", "reason": "nothing removed", "count": 0}]


def duplicate_clusters(run_dir: Path, top: int = TOP_CLUSTERS) -> list[dict]:
    """The largest groups of records removed as duplicates of one record (which is counted too)."""
    rejected = pl.scan_parquet(run_dir / "rejected.parquet")
    sizes = (
        rejected.filter(pl.col("duplicate_of").is_not_null())
        .group_by("duplicate_of")
        .agg(pl.len().alias("removed"), pl.col("stage").unique().sort().str.join(", ").alias("stages"))
        .sort(["removed", "duplicate_of"], descending=[True, False])
        .head(top)
        .collect()
    )
    if sizes.height == 0:
        return []
    ids = sizes["duplicate_of"].implode()
    columns = ["id", "text", "messages", "chosen"]
    texts = pl.concat(
        [
            pl.scan_parquet(run_dir / "kept.parquet").select(columns).filter(pl.col("id").is_in(ids)).collect(),
            rejected.select(columns).filter(pl.col("id").is_in(ids)).collect(),
        ]
    ).unique("id", keep="first")
    excerpt = {row["id"]: _excerpt(row) for row in texts.iter_rows(named=True)}
    return [
        {"kept_id": rid, "size": n + 1, "removed": n, "stages": stages, "excerpt": excerpt.get(rid, "")}
        for rid, n, stages in sizes.iter_rows()
    ]


def _excerpt(row: dict) -> str:
    text = row["text"] or ""
    if not text and row["messages"]:
        text = " / ".join(m["content"] for m in row["messages"])
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"
