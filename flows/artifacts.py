"""Prefect artifacts of a curate run, read from its run directory (never from live DataFrames).

Keys are stable per config (`curate-<config stem>-summary`, ...), so the UI's Artifacts page
shows one history per key and runs of the same config can be compared over time.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import polars as pl
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from curation.core.stats import RunStats
from flows import lifecycle
from schemas.figures import DecontaminationFigures, FiltersFigures, JuryFigures, PiiFigures

log = logging.getLogger(__name__)
TOP_CLUSTERS = 10
EXCERPT_CHARS = 120


def slug(name: str) -> str:
    """An artifact-key-safe form of a name: lowercase letters, digits and single dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", name.lower())).strip("-") or "run"


def keys(config_stem: str) -> dict[str, str]:
    """Every artifact key a curate run of this config publishes."""
    base = f"curate-{slug(config_stem)}"
    return {
        "summary": f"{base}-summary",
        "removals": f"{base}-removals",
        "duplicates": f"{base}-duplicates",
        "jury_scores": f"{base}-jury-scores",
        "contamination": f"{base}-contamination",
        "languages": f"{base}-languages",
        "pii": f"{base}-pii",
        "report": f"{base}-report",
        "jury_progress": f"{base}-jury-progress",
    }


def publish_run(run_dir: Path, config_stem: str) -> list[str]:
    """Summary, removal reasons, duplicate clusters, data hygiene, jury scores and the report link;
    returns the keys."""
    k = keys(config_stem)
    stats = RunStats.read(run_dir)
    report = run_dir / "report.html"
    published = []
    create_markdown_artifact(summary_markdown(stats, run_dir), key=k["summary"], description=f"curate funnel: {run_dir}")
    published.append(k["summary"])
    create_table_artifact(removal_rows(stats), key=k["removals"], description="records removed, per stage and reason")
    published.append(k["removals"])
    clusters = duplicate_clusters(run_dir)
    if clusters:
        create_table_artifact(clusters, key=k["duplicates"], description=f"largest {TOP_CLUSTERS} duplicate clusters")
        published.append(k["duplicates"])
    for name, (rows, description) in hygiene_tables(stats).items():
        create_table_artifact(rows, key=k[name], description=description)
        published.append(k[name])
    jury = stats.figures(JuryFigures)
    if jury and jury.histogram:
        rows = [{"score": score, "records": n} for score, n in jury.histogram.items()]
        create_table_artifact(rows, key=k["jury_scores"], description="aggregated jury scores (rounded)")
        published.append(k["jury_scores"])
    if report.is_file():
        create_link_artifact(report.resolve().as_uri(), link_text=str(report), key=k["report"], description="HTML quality report")
        published.append(k["report"])
    return published


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


class ProgressArtifact:
    """A `(done, total)` callback that keeps one Prefect progress artifact up to date.

    Created on the first call, then updated at most every `every` seconds (and at the end).
    Artifact failures never stop the work: progress is a display. A Prefect API that does not
    answer ends the updates (each would wait out the client's retries, slowing the stage).
    """

    def __init__(self, key: str, description: str, every: float = 1.0) -> None:
        self.key, self.description, self.every = key, description, every
        self.id: UUID | None = None
        self._last = 0.0
        self._off = False

    def __call__(self, done: int, total: int) -> None:
        percent = 100.0 * done / total if total > 0 else 100.0
        now = time.monotonic()
        if self._off or (self.id is not None and done < total and now - self._last < self.every):
            return
        self._last = now
        text = f"{self.description}: {done} of {total}"
        try:
            if self.id is None:
                self.id = create_progress_artifact(percent, key=self.key, description=text)
            else:
                update_progress_artifact(self.id, percent, description=text)
        except Exception as exc:  # noqa: BLE001 - a display problem must not fail a stage
            log.debug("progress artifact %s: %s", self.key, exc)
            self._off = lifecycle.api_unreachable(exc) is not None


def progress_hook(key: str, description: str) -> Callable[[int, int], None]:
    return ProgressArtifact(key, description)
