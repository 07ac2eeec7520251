"""The run report: one self-contained HTML page about a run directory (`RUN_DIR/report.html`).

What a data engineer opens first: the totals and the invariant, the funnel through the stages,
why records were removed (with real examples), lengths of what was kept, the largest duplicate
clusters, data hygiene (benchmark contamination, language mix, PII: curation.report.hygiene),
the jury, a per-source breakdown and the validation suites. Only stats.json is
required; every other part of the run directory is optional and its section then says
"not in this run".

The page must open offline and be safe to open: inline CSS, charts as inline SVG drawn here in
Python (no script at all), and every text from the data escaped (Jinja autoescape; the SVG
helpers escape their labels). Examples and clusters are capped so big runs stay small pages.
Parquet files are scanned lazily, reading only the columns and rows a section needs.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import orjson
import polars as pl

from curation.core.stats import RunStats, StageStats
from curation.report.charts import bar_chart, cluster_size_chart, histogram, stacked_bars, token_chart
from curation.report.jury import jury_section
from curation.report.records import CLUSTER_EXCERPT, example, num, pct, records_by_id, rows_at, scan
from schemas.figures import DEDUP_FIGURES, ExportFigures, Figures, IngestFigures, JuryFigures
from schemas.train_result import TrainSummary

REPORT = "report.html"
TEMPLATE = "report.html.jinja"
RESOURCES = Path(__file__).resolve().parents[1] / "resources"

MAX_EXAMPLES = 5  # removed records shown per (stage, reason), drawn at random
SAMPLE_SEED = 0  # the same run shows the same examples each time its report is written
MAX_CLUSTERS = 8  # duplicate clusters shown
MAX_MEMBERS = 3  # removed records shown per cluster
MAX_SOURCES = 40  # input paths listed; the rest are summed in one row
MAX_FAILED_EXPECTATIONS = 25  # per validation suite
MAX_VERSION_IDS = 25  # added / removed ids and score shifts listed for a published version


def write_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` from what the run directory holds and return its path.

    Raises FileNotFoundError when the run directory has no stats.json.
    """
    run_dir = Path(run_dir)
    stats = RunStats.read(run_dir)
    kept = scan(run_dir / "kept.parquet")
    rejected = scan(run_dir / "rejected.parquet")
    stages = stats.stages
    jury_figures = stats.figures(JuryFigures)
    from curation.report import hygiene  # it uses this module's helpers
    from curation.report.ablation import ablation

    context = {
        "title": f"curate report: {run_dir.resolve().name}",
        "run_dir": str(run_dir.resolve()),
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": _summary(stats, kept),
        "funnel": _funnel(stages),
        "reasons": _reasons(stages, rejected),
        "lengths": _lengths(kept) if kept is not None else None,
        "tokens": _tokens(stats.figures(ExportFigures)),
        "duplicates": _duplicates(kept, rejected) if rejected is not None else None,
        "siblings": _siblings(stages),
        "contamination": hygiene.contamination(stats, run_dir, rejected),
        "languages": hygiene.languages(stats),
        "pii": hygiene.pii(stats, kept),
        "jury": jury_section(jury_figures, run_dir / "jury" / "ratings.parquet", kept, rejected) if jury_figures else None,
        "sources": _sources(kept, rejected) if kept is not None or rejected is not None else None,
        "inputs": _inputs(stats.figures(IngestFigures)),
        "validation": _validation(run_dir / "validation" / "summary.json"),
        "version": _version(run_dir / "publish.json"),
        "training": _training(run_dir / "train" / "summary.json"),
        "ablation": ablation(run_dir / "train" / "ablation" / "summary.json"),
    }
    html = _environment().get_template(TEMPLATE).render(**context)
    out = run_dir / REPORT
    out.write_text(html, encoding="utf-8")
    return out


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(RESOURCES),
        autoescape=True,  # records can hold markup: everything from the data is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = num
    env.filters["pct"] = pct
    return env


# --- formatting ------------------------------------------------------------------------------


def details(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A stage's own figures as (name, value) rows for a table, never JSON: nested figures get
    dotted names (`splits.sft.test`), lists of plain values are joined, lists of objects become
    one row per item (`files[0].path`)."""
    rows: list[tuple[str, str]] = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += details(value, f"{name}.") if value else [(name, "none")]
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                rows += details(item, f"{name}[{i}].") if isinstance(item, dict) else [(f"{name}[{i}]", num(item))]
        elif isinstance(value, list):
            rows.append((name, ", ".join(num(v) for v in value) or "none"))
        else:
            rows.append((name, num(value)))
    return rows


# --- charts (inline SVG) ---------------------------------------------------------------------


# --- sections --------------------------------------------------------------------------------


def _summary(stats: RunStats, kept: pl.LazyFrame | None) -> dict:
    totals = stats.totals
    ingested, generated = totals.ingested, totals.generated
    by_kind = None
    if kept is not None:
        counts = kept.group_by("kind").len().sort("len", descending=True).collect()
        by_kind = dict(zip(counts["kind"].to_list(), counts["len"].to_list(), strict=True))
    return {
        "exported": _exported(stats.figures(ExportFigures)),
        "ingested": ingested,
        "generated": generated,
        "kept": totals.kept,
        "rejected": totals.rejected,
        "retention": pct(totals.kept, ingested + generated),
        "invariant_holds": stats.invariant.holds if stats.invariant else None,
        "invariant_rule": stats.invariant.rule if stats.invariant else "",
        "seconds": stats.seconds,
        "config": stats.config,
        "kept_by_kind": by_kind,
    }


def _exported(export: ExportFigures | None) -> dict | None:
    """Of the kept records: how many are in an exported set (per kind) and how many are in none
    (raw text, kinds no format takes); None without an export stage."""
    if export is None:
        return None
    sets = export.splits
    in_sets = {kind: s.rows for kind, s in sets.items()}
    not_written = {kind: s.not_written for kind, s in sets.items() if not s.written}
    outside = export.not_exported
    return {"in_sets": in_sets, "total": sum(in_sets.values()), "not_written": not_written,
            "outside": outside, "outside_total": sum(outside.values())}


# Figures shown in their own section rather than the funnel's details (fields of the model).
OWN_SECTION: dict[type[Figures], set[str]] = {
    IngestFigures: {"files", "skipped_files"}, JuryFigures: set(JuryFigures.model_fields), ExportFigures: {"tokens"},
}


def _funnel(stages: list[StageStats]) -> dict:
    """In/out per stage; filters remove records, synthesis and preference add them."""
    rows = []
    for s in stages:
        counts = {"in": s.rows_in, "out": s.out, "removed": s.removed}
        extras = details(s.figures.model_dump(mode="json", exclude=OWN_SECTION.get(type(s.figures), set())))
        added = max(s.out - s.rows_in, 0)
        rows.append({"stage": s.stage, **counts, "seconds": s.seconds, "added": added, "extras": extras})
    chart_rows = [
        (
            r["stage"],
            [
                (r["out"] - r["added"], "c-kept", f"{r['stage']}: {r['out']:,} out"),
                (r["added"], "c-added", f"{r['stage']}: {r['added']:,} added"),
                (r["removed"], "c-removed", f"{r['stage']}: {r['removed']:,} removed"),
            ],
            f"{r['in']:,} → {r['out']:,}",
        )
        for r in rows
    ]
    return {"rows": rows, "chart": stacked_bars(chart_rows) if rows else None}


def _reasons(stages: list[StageStats], rejected: pl.LazyFrame | None) -> dict:
    """Counts per stage and reason from stats.json; real removed records from rejected.parquet."""
    examples = _reason_examples(rejected) if rejected is not None else None
    rows = [
        {"stage": s.stage, "reason": reason, "count": count,
         "examples": (examples or {}).get((s.stage, reason), [])}
        for s in stages
        for reason, count in sorted(s.removed_by_reason.items(), key=lambda kv: -kv[1])
    ]
    chart = stacked_bars(
        [(f"{r['stage']}: {r['reason']}", [(r["count"], "c-removed", f"{r['count']:,}")], f"{r['count']:,}") for r in rows]
    )
    return {"rows": rows, "total": sum(r["count"] for r in rows), "chart": chart if rows else None,
            "has_examples": examples is not None, "max_examples": MAX_EXAMPLES}


def _reason_examples(rejected: pl.LazyFrame) -> dict[tuple[str, str], list[dict]]:
    """A seeded random sample per (stage, reason), not the first rows: the first removals of a
    reason are often one file's, one shape's, and say little about the rule's precision."""
    # Positions first (two cheap columns), then only those rows with their texts.
    picks = (
        rejected.select("stage", "reason")
        .with_row_index("_pos")
        .group_by("stage", "reason", maintain_order=True)
        .agg(pl.col("_pos").shuffle(seed=SAMPLE_SEED).head(MAX_EXAMPLES))
        .explode("_pos")
        .collect()
    )
    rows = rows_at(rejected, sorted(picks["_pos"].to_list()))
    examples: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        examples.setdefault((row["stage"], row["reason"]), []).append(example(row))
    return examples


def _lengths(kept: pl.LazyFrame) -> list[dict]:
    """Words per text of the kept records: sft turns by role, raw documents, preference answers."""
    words = pl.col("content").str.count_matches(r"\S+").alias("words")
    chars = pl.col("content").str.len_chars().alias("chars")
    turns = kept.filter(pl.col("kind") == "sft").select("messages").explode("messages").unnest("messages")
    views = [
        ("user turns (sft)", turns.filter(pl.col("role") == "user").select("content")),
        ("assistant turns (sft)", turns.filter(pl.col("role") == "assistant").select("content")),
        ("raw documents", kept.filter(pl.col("kind") == "raw").select(pl.col("text").alias("content"))),
    ]
    for side in ("chosen", "rejected"):
        answers = kept.filter(pl.col("kind") == "preference").select(side).explode(side).unnest(side)
        views.append((f"preference {side} answers", answers.select("content")))
    frames = pl.collect_all([v.filter(pl.col("content").is_not_null()).select(words, chars) for _, v in views])
    return [_length_panel(name, f) for (name, _), f in zip(views, frames, strict=True) if f.height]


def _length_panel(name: str, frame: pl.DataFrame) -> dict:
    values = frame["words"].to_numpy()
    return {
        "name": name,
        "count": len(values),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": int(values.max()),
        "median_chars": float(frame["chars"].median()),  # type: ignore[arg-type]
        "chart": bar_chart(histogram(values), "c-length", "words"),
    }


def _tokens(export: ExportFigures | None) -> list[dict] | None:
    """Token lengths of the exported sets as the training tokenizer and chat template count
    them (export measures every record), with the share over max_seq_length and what happens
    to those records."""
    if export is None:
        return None
    limit = export.max_seq_length
    panels = []
    for kind, t in export.tokens.items():
        if not t.count:
            continue
        panel = {"kind": kind, "count": t.count, "p50": t.p50, "p95": t.p95, "max": t.max,
                 "over_max_seq_length": t.over_max_seq_length, "dropped_too_long": t.dropped_too_long,
                 "kept_for_truncation": t.kept_for_truncation}
        panel["over_share"] = pct(t.over_max_seq_length, t.count)
        panel["chart"] = token_chart(t.histogram, limit) if limit else None
        panels.append(panel)
    return [{**p, "limit": limit, "overlength": export.overlength, "tokenizer": export.tokenizer,
             "template": export.chat_template} for p in panels]


def _duplicates(kept: pl.LazyFrame | None, rejected: pl.LazyFrame) -> dict:
    """The largest clusters by `duplicate_of`: the kept record next to records removed for it."""
    # select's rejects name their closest selected record, not a duplicate: not a cluster.
    dups = rejected.select("duplicate_of", "stage").with_row_index("_pos").filter(
        pl.col("duplicate_of").is_not_null() & (pl.col("stage") != "select")
    )
    sizes = (
        dups.group_by("duplicate_of")
        .agg(pl.len().alias("removed"), pl.col("_pos").head(MAX_MEMBERS), pl.col("stage").unique(maintain_order=True))
        .sort(["removed", "duplicate_of"], descending=[True, False])
        .collect()
    )
    by_stage = dups.group_by("stage").agg(pl.len().alias("removed"), pl.col("duplicate_of").n_unique().alias("clusters"))
    top = sizes.head(MAX_CLUSTERS)
    members = {r["_pos"]: example(r, CLUSTER_EXCERPT) for r in rows_at(rejected, top["_pos"].explode().to_list())}
    originals = records_by_id(kept, rejected, top["duplicate_of"].to_list())
    clusters = [
        {
            "kept_id": row["duplicate_of"],
            "removed": row["removed"],
            "stages": row["stage"],
            "original": originals.get(row["duplicate_of"]),
            "members": [members[p] for p in row["_pos"] if p in members],
        }
        for row in top.iter_rows(named=True)
    ]
    return {
        "clusters": clusters,
        "total_clusters": sizes.height,
        "total_removed": int(sizes["removed"].sum()) if sizes.height else 0,
        "by_stage": by_stage.sort("stage").collect().to_dicts(),
        "size_chart": cluster_size_chart(sizes["removed"].to_numpy()) if sizes.height else None,
    }


def _siblings(stages: list[StageStats]) -> list[dict]:
    """Per dedup stage that protected preference siblings (curation.dedup.siblings): how many
    records it kept that it would otherwise have removed."""
    return [{"stage": s.stage, "protected": s.figures.siblings_protected} for s in stages
            if isinstance(s.figures, DEDUP_FIGURES) and s.figures.siblings_protected is not None]


def _sources(kept: pl.LazyFrame | None, rejected: pl.LazyFrame | None) -> dict:
    """Kept and rejected per input path (the source without its `:line` / `#row`)."""
    parts = []
    if kept is not None:
        parts.append(kept.select(_source_path(), pl.lit(None, pl.String).alias("reason"), pl.lit(1).alias("is_kept")))
    if rejected is not None:
        parts.append(rejected.select(_source_path(), "reason", pl.lit(0).alias("is_kept")))
    rows = pl.concat(parts)
    by_path = (
        rows.group_by("path")
        .agg(pl.col("is_kept").sum().alias("kept"), (1 - pl.col("is_kept")).sum().alias("rejected"))
        .with_columns(total=pl.col("kept") + pl.col("rejected"))
        .sort(["total", "path"], descending=[True, False])
    )
    top_reasons = (
        rows.filter(pl.col("is_kept") == 0)
        .group_by("path", "reason")
        .len()
        .sort(["path", "len", "reason"], descending=[False, True, False])
        .group_by("path", maintain_order=True)
        .head(3)
    )
    table, reasons = pl.collect_all([by_path, top_reasons])
    top: dict[str, list[tuple[str, int]]] = {}
    for path, reason, count in reasons.iter_rows():
        top.setdefault(path, []).append((reason, count))
    listed = [{**r, "reasons": top.get(r["path"], [])} for r in table.head(MAX_SOURCES).to_dicts()]
    rest = table.slice(MAX_SOURCES)
    chart = stacked_bars(
        [
            (
                r["path"],
                [(r["kept"], "c-kept", f"{r['kept']:,} kept"), (r["rejected"], "c-removed", f"{r['rejected']:,} rejected")],
                f"{r['kept']:,} / {r['total']:,} kept",
            )
            for r in listed
        ]
    )
    return {
        "rows": listed,
        "rest": {"paths": rest.height, "kept": int(rest["kept"].sum()), "rejected": int(rest["rejected"].sum())},
        "chart": chart if listed else None,
        "has_kept": kept is not None,
        "has_rejected": rejected is not None,
    }


def _inputs(ingest: IngestFigures | None) -> dict | None:
    """What ingest detected per input file (format, compression, shape) and made of it, and
    the files of directory inputs it left out."""
    if ingest is None:
        return None
    files = []
    for f in ingest.files:
        reasons = list(f.removed_by_reason.items())[:3]
        files.append({**f.model_dump(), "reasons": reasons, "rejected_share": pct(f.rejected, f.records + f.rejected)})
    return {"files": files, "skipped": ingest.skipped_files}


def _source_path() -> pl.Expr:
    # "path:line" / "path#row"; synthesis appends "@start-end"; preference pairs are "preference:<prompt source>".
    source = pl.col("source").fill_null("(unknown)")
    path = source.str.replace(r"@\d+-\d+$", "").str.replace(r"[:#]\d+$", "")
    return (
        pl.when(source.str.starts_with("preference:"))
        .then(pl.lit("(preference pairs)"))
        .when(source.str.contains(r"@\d+-\d+$"))
        .then(path + " (synthesis)")
        .otherwise(path)
        .alias("path")
    )


def _training(path: Path) -> dict | None:
    """train/summary.json (training/candidates.py): the leaderboard with a chart of the deciding
    metric, and per candidate its win-rate against the base and the error analysis of both sides."""
    if not path.is_file() or "leaderboard" not in json.loads(path.read_text(encoding="utf-8")):
        return None  # no training, or a summary written before candidates were ranked
    summary: TrainSummary = TrainSummary.read(path)
    metric = summary.select_by[0]
    values = [(row.name, row.model_dump()[metric]) for row in summary.leaderboard]
    bars = [(name, f"{name} {metric}", float(value)) for name, value in values if value is not None]
    return {
        "summary": summary,
        "metric": metric,
        "chart": bar_chart(bars, "c-train", metric) if bars else None,
        "candidates": list(summary.candidates.values()),
    }


def _version(path: Path) -> dict | None:
    """What a refresh published: the version and its changes against the parent (publish.json)."""
    if not path.is_file():
        return None
    diff = json.loads(path.read_text(encoding="utf-8"))
    return {**diff, "shown": MAX_VERSION_IDS}


def _validation(path: Path) -> dict | None:
    """The suites of validation/summary.json (written by the validation stage), normalised."""
    if not path.is_file():
        return None
    return {"suites": [_suite(suite, path.parents[1]) for suite in orjson.loads(path.read_bytes()).get("suites", [])]}


def _suite(suite: dict, run_dir: Path) -> dict:
    failed = suite.get("failed") or []
    href, note = _data_docs(suite.get("data_docs"), run_dir)
    return {
        **{k: suite.get(k) for k in ("name", "severity", "success", "expectations", "data_docs", "note")},
        "failed": [{k: f.get(k) for k in ("expectation", "column", "details")} for f in failed[:MAX_FAILED_EXPECTATIONS]],
        "failed_total": len(failed),
        "docs_href": href,
        "docs_note": note,
    }


def _data_docs(target: str | None, run_dir: Path) -> tuple[str | None, str | None]:
    """(href, note): a link only to a file inside the run directory, so the report stays offline."""
    if not target:
        return None, None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^[/\\]", target):
        return None, "not linked: not a path relative to the run directory"
    if not (run_dir / target).exists():
        return None, "not found"
    return target, None
