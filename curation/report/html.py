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
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import orjson
import polars as pl
from markupsafe import Markup, escape

from curation.core.stats import RunStats, StageStats
from curation.dedup.siblings import STAT
from schemas.export import exported_sets
from schemas.train_result import TrainSummary

REPORT = "report.html"
TEMPLATE = "report.html.jinja"
RESOURCES = Path(__file__).resolve().parents[1] / "resources"

MAX_EXAMPLES = 5  # removed records shown per (stage, reason), drawn at random
SAMPLE_SEED = 0  # the same run shows the same examples each time its report is written
MAX_CLUSTERS = 8  # duplicate clusters shown
MAX_MEMBERS = 3  # removed records shown per cluster
MAX_SOURCES = 40  # input paths listed; the rest are summed in one row
MAX_JURY_EXAMPLES = 5  # failed ratings and largest disagreements
MAX_FAILED_EXPECTATIONS = 25  # per validation suite
MAX_VERSION_IDS = 25  # added / removed ids and score shifts listed for a published version
EXCERPT = 300  # characters of a record shown in tables
CLUSTER_EXCERPT = 700  # characters per text in the side-by-side duplicate view
LENGTH_BINS = 24

JURY_KEYS = {"judges", "rated", "unscored", "agreement_alpha", "mean_spread", "histogram", "usage",
             "estimated_cost_usd", "distill"}


def write_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` from what the run directory holds and return its path.

    Raises FileNotFoundError when the run directory has no stats.json.
    """
    run_dir = Path(run_dir)
    stats = RunStats.read(run_dir)
    kept = _scan(run_dir / "kept.parquet")
    rejected = _scan(run_dir / "rejected.parquet")
    stages = stats.stages
    jury_stage = stats.stage("jury")
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
        "tokens": _tokens(stats.stage("export")),
        "duplicates": _duplicates(kept, rejected) if rejected is not None else None,
        "siblings": _siblings(stages),
        "contamination": hygiene.contamination(stats, run_dir, rejected),
        "languages": hygiene.languages(stats),
        "pii": hygiene.pii(stats, kept),
        "jury": _jury(jury_stage, run_dir / "jury" / "ratings.parquet", kept, rejected) if jury_stage else None,
        "sources": _sources(kept, rejected) if kept is not None or rejected is not None else None,
        "inputs": _inputs(stats.stage("ingest")),
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
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    return env


def _scan(path: Path) -> pl.LazyFrame | None:
    return pl.scan_parquet(path) if path.is_file() else None


# --- formatting ------------------------------------------------------------------------------


def _num(value: Any) -> str:
    """Integers with thousands separators, floats with 3 significant digits, None as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


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
                rows += details(item, f"{name}[{i}].") if isinstance(item, dict) else [(f"{name}[{i}]", _num(item))]
        elif isinstance(value, list):
            rows.append((name, ", ".join(_num(v) for v in value) or "none"))
        else:
            rows.append((name, _num(value)))
    return rows


def _excerpt(text: str | None, limit: int = EXCERPT) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def record_text(row: dict) -> str:
    """A record as one readable text: raw text, turns as `[role] content`, or the input line."""
    if row.get("text"):
        return row["text"]
    parts = [f"[{m['role']}] {m['content']}" for m in row.get("messages") or []]
    for side in ("chosen", "rejected"):
        parts += [f"[{side}] {m['content']}" for m in row.get(side) or []]
    return "\n".join(parts) if parts else (row.get("raw") or "")


# --- charts (inline SVG) ---------------------------------------------------------------------


def bar_chart(bars: list[tuple[str, str, float]], css: str, unit: str, over: list[bool] | None = None) -> Markup:
    """Vertical bars of (tick label, tooltip, value); ticks thinned out so they never overlap.
    `over`: per bar, whether it is past a limit (drawn in the removed colour)."""
    width, height, top, bottom, left = 640, 200, 14, 34, 44
    peak = max((v for _, _, v in bars), default=0) or 1
    slot = (width - left - 4) / max(len(bars), 1)
    plot = height - top - bottom
    parts = [
        f'<line class="axis" x1="{left}" y1="{top + plot}" x2="{width}" y2="{top + plot}"/>',
        f'<text class="tick" x="{left - 6}" y="{top + 4}" text-anchor="end">{escape(_num(peak))}</text>',
        f'<text class="tick" x="{left - 6}" y="{top + plot}" text-anchor="end">0</text>',
        f'<text class="tick" x="{left}" y="{height - 2}">{escape(unit)}</text>',
    ]
    ticks = _tick_positions(len(bars), slot, max((len(tick) for tick, _, _ in bars), default=1))
    for i, (tick, tip, value) in enumerate(bars):
        h = plot * value / peak
        x = left + i * slot + slot * 0.1
        bar_css = "c-removed" if over and over[i] else css
        parts.append(
            f'<rect class="bar {escape(bar_css)}" x="{x:.1f}" y="{top + plot - h:.1f}" width="{slot * 0.8:.1f}"'
            f' height="{h:.1f}"><title>{escape(tip)}: {escape(_num(value))}</title></rect>'
        )
        if i in ticks:
            parts.append(
                f'<text class="tick" x="{x + slot * 0.4:.1f}" y="{top + plot + 14}"'
                f' text-anchor="middle">{escape(tick)}</text>'
            )
    return _svg(width, height, parts)


def _tick_positions(n: int, slot: float, chars: int) -> set[int]:
    every = max(1, math.ceil((chars * 7 + 8) / slot))  # about 7 px per character at 11 px
    ticks = set(range(0, n, every))
    last = max(ticks, default=0)
    if n and last != n - 1:  # the last bar (often the tail bin) is always labelled
        if 0 < last and n - 1 - last < every:  # too close to it: drop the tick before
            ticks.discard(last)
        ticks.add(n - 1)
    return ticks


def stacked_bars(rows: list[tuple[str, list[tuple[float, str, str]], str]]) -> Markup:
    """Horizontal stacked bars: per row a label, segments of (value, css class, tooltip), a note."""
    width, row_h, left, right = 700, 24, 220, 110
    peak = max((sum(v for v, _, _ in segs) for _, segs, _ in rows), default=0) or 1
    span = width - left - right
    parts = []
    for i, (label, segments, note) in enumerate(rows):
        y = i * row_h + 4
        shown = label if len(label) <= 34 else "…" + label[-33:]  # file names differ at the end
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + 14}" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(shown)}</text>"
        )
        x = float(left)
        for value, css, tip in segments:
            w = span * value / peak
            parts.append(
                f'<rect class="bar {escape(css)}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 8}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            x += w
        parts.append(f'<text class="tick" x="{x + 4:.1f}" y="{y + 14}">{escape(note)}</text>')
    return _svg(width, len(rows) * row_h + 8, parts)


def _svg(width: int, height: int, parts: list[str]) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="img">{body}</svg>'
    )


# --- sections --------------------------------------------------------------------------------


def _summary(stats: RunStats, kept: pl.LazyFrame | None) -> dict:
    totals = stats.totals
    ingested, generated = totals.ingested, totals.generated
    by_kind = None
    if kept is not None:
        counts = kept.group_by("kind").len().sort("len", descending=True).collect()
        by_kind = dict(zip(counts["kind"].to_list(), counts["len"].to_list(), strict=True))
    return {
        "exported": _exported(stats.stage("export")),
        "ingested": ingested,
        "generated": generated,
        "kept": totals.kept,
        "rejected": totals.rejected,
        "retention": _pct(totals.kept, ingested + generated),
        "invariant_holds": stats.invariant.holds if stats.invariant else None,
        "invariant_rule": stats.invariant.rule if stats.invariant else "",
        "seconds": stats.seconds,
        "config": stats.config,
        "kept_by_kind": by_kind,
    }


def _exported(export: StageStats | None) -> dict | None:
    """Of the kept records: how many are in an exported set (per kind) and how many are in none
    (raw text, kinds no format takes); None without an export stage."""
    if export is None:
        return None
    sets = exported_sets(export.figures)
    in_sets = {kind: s.rows for kind, s in sets.items()}
    not_written = {kind: s.not_written for kind, s in sets.items() if not s.written}
    outside = {kind: int(n) for kind, n in (export.figures.get("not_exported") or {}).items()}
    return {"in_sets": in_sets, "total": sum(in_sets.values()), "not_written": not_written,
            "outside": outside, "outside_total": sum(outside.values())}


# Figures shown in their own section rather than the funnel's details.
OWN_SECTION = {"ingest": {"files", "skipped_files"}, "jury": JURY_KEYS, "export": {"tokens"}}


def _funnel(stages: list[StageStats]) -> dict:
    """In/out per stage; filters remove records, synthesis and preference add them."""
    rows = []
    for s in stages:
        counts = {"in": s.rows_in, "out": s.out, "removed": s.removed}
        own = OWN_SECTION.get(s.stage, set())
        extras = details({k: v for k, v in s.figures.items() if k not in own})
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
    rows = _rows_at(rejected, sorted(picks["_pos"].to_list()))
    examples: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        examples.setdefault((row["stage"], row["reason"]), []).append(_example(row))
    return examples


def _rows_at(frame: pl.LazyFrame, positions: list[int]) -> list[dict]:
    if not positions:
        return []
    # Streaming: the whole file is read for a few rows, but in batches, not into memory at once.
    found = frame.with_row_index("_pos").filter(pl.col("_pos").is_in(positions)).collect(engine="streaming")
    return found.to_dicts()


def _example(row: dict, limit: int = EXCERPT) -> dict:
    return {
        "id": row.get("id"),
        "source": row.get("source"),
        "stage": row.get("stage"),
        "reason": row.get("reason"),
        "detail": row.get("detail"),
        "duplicate_of": row.get("duplicate_of"),
        "kind": row.get("kind"),
        "excerpt": _excerpt(record_text(row), limit),
    }


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


def _tokens(export: StageStats | None) -> list[dict] | None:
    """Token lengths of the exported sets as the training tokenizer and chat template count
    them (export measures every record), with the share over max_seq_length and what happens
    to those records."""
    if export is None:
        return None
    limit = export.figures.get("max_seq_length")
    overlength = export.figures.get("overlength")
    panels = []
    for kind, t in (export.figures.get("tokens") or {}).items():
        if not t.get("count"):
            continue
        panel = {"kind": kind, **{k: t.get(k) for k in ("count", "p50", "p95", "max", "over_max_seq_length",
                                                         "dropped_too_long", "kept_for_truncation")}}
        panel["over_share"] = _pct(t.get("over_max_seq_length") or 0, t["count"])
        hist = t.get("histogram")
        panel["chart"] = _token_chart(hist, limit) if hist and limit else None
        panels.append(panel)
    return [{**p, "limit": limit, "overlength": overlength, "tokenizer": export.figures.get("tokenizer"),
             "template": export.figures.get("chat_template")} for p in panels]


def _token_chart(hist: dict, limit: int) -> Markup:
    """The export's token histogram; bins past max_seq_length are drawn in the removed colour."""
    width, counts = int(hist["bin_width"]), hist["counts"]
    bars = []
    for i, count in enumerate(counts):
        lo, hi = i * width, (i + 1) * width - 1
        tail = i == len(counts) - 1
        label = f"≥{_short(lo)}" if tail else _short(lo)
        tip = f"{lo}+ tokens" if tail else f"{lo}-{hi} tokens"
        bars.append((label, tip + (" (over max_seq_length)" if lo >= limit else ""), float(count), lo >= limit))
    return bar_chart([(a, b, c) for a, b, c, _ in bars], "c-length", f"tokens (max_seq_length {limit} marked red)",
                     over=[over for *_, over in bars])


def histogram(values: np.ndarray, bins: int = LENGTH_BINS) -> list[tuple[str, float]]:
    """Counts in equal round-width bins up to the 95th percentile; the long tail goes in a last bin."""
    width = _round_width(max(float(np.percentile(values, 95)), 1.0) / bins)
    n = min(bins, int(values.max()) // width + 1)  # fewer bins when every value fits
    counts = np.bincount(np.minimum(values // width, n - 1).astype(int), minlength=n)
    tips = [f"{i * width} words" if width == 1 else f"{i * width}-{(i + 1) * width - 1} words" for i in range(n)]
    ticks = [_short(i * width) for i in range(n)]
    if values.max() >= n * width:
        ticks[-1] = tips[-1] = f"≥{_short((n - 1) * width)}"
    return [(tick, tip, float(c)) for tick, tip, c in zip(ticks, tips, counts, strict=True)]


def _short(n: int) -> str:
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def _round_width(raw: float) -> int:
    """The smallest of 1, 2, 5 x 10^k not below raw (at least 1)."""
    if raw <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(int(m * magnitude) for m in (1, 2, 5, 10) if m * magnitude >= raw)


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
    members = {r["_pos"]: _example(r, CLUSTER_EXCERPT) for r in _rows_at(rejected, top["_pos"].explode().to_list())}
    originals = _records_by_id(kept, rejected, top["duplicate_of"].to_list())
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
        "size_chart": _cluster_size_chart(sizes["removed"].to_numpy()) if sizes.height else None,
    }


def _siblings(stages: list[StageStats]) -> list[dict]:
    """Per dedup stage that protected preference siblings (curation.dedup.siblings): how many
    records it kept that it would otherwise have removed."""
    return [{"stage": s.stage, "protected": s.figures[STAT]} for s in stages if STAT in s.figures]


def _cluster_size_chart(removed: np.ndarray) -> Markup:
    sizes = removed + 1  # the kept record belongs to its cluster
    bins = [(2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, 10**12)]
    labels = [str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**12 else f"≥{lo}") for lo, hi in bins]
    bars = [
        (label, f"clusters of {label}", float(((sizes >= lo) & (sizes <= hi)).sum()))
        for label, (lo, hi) in zip(labels, bins, strict=True)
    ]
    return bar_chart(bars, "c-dup", "records per cluster")


def _records_by_id(kept: pl.LazyFrame | None, rejected: pl.LazyFrame | None, ids: list[str]) -> dict[str, dict]:
    """Records for `ids`, from kept.parquet, else from rejected.parquet (removed by a later stage)."""
    found: dict[str, dict] = {}
    for frame, status in ((kept, "kept"), (rejected, "removed later")):
        missing = [i for i in ids if i not in found]
        if frame is None or not missing:
            continue
        for row in frame.filter(pl.col("id").is_in(missing)).collect(engine="streaming").to_dicts():
            found.setdefault(row["id"], {**_example(row, CLUSTER_EXCERPT), "status": status})
    return found


def _jury(entry: StageStats, ratings_path: Path, kept: pl.LazyFrame | None, rejected: pl.LazyFrame | None) -> dict:
    """The jury stage's figures from stats.json, per-judge scores and examples from ratings.parquet."""
    stage = entry.figures
    bars = [(label, f"score {label}", float(count)) for label, count in (stage.get("histogram") or {}).items()]
    ratings = _scan(ratings_path)
    usage = stage.get("usage") or {}
    by_judge = _judge_ratings(ratings) if ratings is not None else {}
    return {
        "stage": stage,
        "chart": bar_chart(bars, "c-jury", "aggregated score") if bars else None,
        "judges": [
            {"name": name, **(usage.get(name) or {}), **by_judge.get(name, {})}
            for name in stage.get("judges") or list(usage) or list(by_judge)
        ],
        "has_ratings": ratings is not None,
        "cost": sum((u.get("cost_usd") or 0.0) for u in usage.values()) if usage else None,
        "distill": stage.get("distill"),
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
    return [{**r, "raw": _excerpt(r.get("raw"))} for r in failed.to_dicts()]


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
    records = _records_by_id(kept, rejected, spreads["id"].to_list())
    return [
        {"id": r["id"], "spread": r["spread"], "scores": {s["judge"]: s["score"] for s in r["scores"]},
         "record": records.get(r["id"])}
        for r in spreads.iter_rows(named=True)
    ]


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


def _inputs(ingest: StageStats | None) -> dict | None:
    """What ingest detected per input file (format, compression, shape) and made of it, and
    the files of directory inputs it left out."""
    if ingest is None or "files" not in ingest.figures:
        return None
    files = []
    for f in ingest.figures["files"]:
        reasons = list((f.get("removed_by_reason") or {}).items())[:3]
        outcomes = (f.get("records") or 0) + (f.get("rejected") or 0)
        files.append({**f, "reasons": reasons, "rejected_share": _pct(f.get("rejected") or 0, outcomes)})
    return {"files": files, "skipped": ingest.figures.get("skipped_files") or []}


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
