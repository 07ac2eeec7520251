"""The report's data-hygiene sections: benchmark contamination (per benchmark, with matched
records beside the benchmark text they contain), the input's language mix, and PII found."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from markupsafe import Markup

from curation.core.stats import RunStats
from curation.pii.detect import PLACEHOLDER
from curation.report.charts import bar_chart
from curation.report.html import MAX_EXAMPLES, SAMPLE_SEED
from curation.report.records import CLUSTER_EXCERPT, EXCERPT, example, excerpt, record_text, rows_at
from schemas.figures import DecontaminationFigures, FiltersFigures, PiiFigures

MATCHES = Path("decontamination") / "matches.parquet"
MAX_LANGUAGES = 20  # bars in the language chart; the rest are summed


def contamination(stats: RunStats, run_dir: Path, rejected: pl.LazyFrame | None) -> dict | None:
    entry = stats.figures(DecontaminationFigures)
    if entry is None:
        return None
    rows = [{"name": name, **figures.model_dump()} for name, figures in entry.benchmarks.items()]
    path = run_dir / MATCHES
    examples: dict[str, list[dict]] = {}
    if path.is_file():
        picks = pl.read_parquet(path).group_by("benchmark", maintain_order=True).head(MAX_EXAMPLES)
        records = {}
        if rejected is not None and picks.height:
            found = rejected.filter((pl.col("stage") == "decontamination") & pl.col("id").is_in(picks["id"].to_list()))
            records = {r["id"]: example(r, CLUSTER_EXCERPT) for r in found.collect(engine="streaming").to_dicts()}
        for match in picks.iter_rows(named=True):
            examples.setdefault(match["benchmark"], []).append({
                **match, "record": records.get(match["id"]), "benchmark_text": excerpt(match["benchmark_text"], CLUSTER_EXCERPT),
            })
    return {"rows": rows, "examples": examples, "has_matches": path.is_file(),
            "ngram": entry.ngram, "min_coverage": entry.min_coverage}


def languages(stats: RunStats) -> dict | None:
    entry = stats.stage(FiltersFigures.STAGE)
    mix = entry.figures_as(FiltersFigures).languages if entry else None
    if not mix:
        return None
    ordered = sorted(mix.items(), key=lambda kv: (-kv[1], kv[0]))
    shown, rest = ordered[:MAX_LANGUAGES], sum(n for _, n in ordered[MAX_LANGUAGES:])
    bars = [(lang, f"{lang}: {n:,} records", float(n)) for lang, n in shown]
    if rest:
        bars.append(("other", f"other: {rest:,}", float(rest)))
    total = sum(mix.values())
    return {"rows": [{"language": lang, "records": n, "share": n / total} for lang, n in ordered],
            "chart": bar_chart(bars, "c-kept", "records") if bars else Markup(""),
            "removed": entry.removed_by_reason.get("wrong_language", 0) if entry else 0, "total": total}


REDACTED = "|".join(re.escape(p) for p in PLACEHOLDER.values())


def pii(stats: RunStats, kept: pl.LazyFrame | None) -> dict | None:
    """What the PII step found, and (redact) a seeded random sample of kept records it changed,
    each shown around its first placeholder: a data engineer judges the detector from these
    (a placeholder inside code or a decimal is a false positive to see). Dropped records are
    among the removal reasons' examples."""
    entry = stats.stage(PiiFigures.STAGE)
    if entry is None:
        return None
    figures = entry.figures_as(PiiFigures)
    changed = _redacted_examples(kept) if kept is not None and figures.action == "redact" else []
    return {"action": figures.action, "records": figures.records_with_pii, "changed": changed,
            "found": figures.found, "removed": entry.removed, "rows_in": entry.rows_in}


def _redacted_examples(kept: pl.LazyFrame) -> list[dict]:
    def turns(side: str) -> pl.Expr:
        return pl.col(side).list.eval(pl.element().struct.field("content")).list.join("\n")

    every_text = pl.concat_str([pl.col("text"), turns("messages"), turns("chosen"), turns("rejected")],
                               separator="\n", ignore_nulls=True)
    hits = (
        kept.select(every_text.str.contains(REDACTED).alias("hit")).with_row_index("_pos")
        .filter(pl.col("hit")).select("_pos").collect(engine="streaming")["_pos"]
    )
    picks = hits.shuffle(seed=SAMPLE_SEED).head(MAX_EXAMPLES).sort().to_list()
    return [{**example(row), "excerpt": _around(record_text(row))} for row in rows_at(kept, picks)]


def _around(text: str) -> str:
    """The text around its first placeholder (EXCERPT characters), marked where it was cut."""
    first = re.search(REDACTED, text)
    start = max(0, (first.start() if first else 0) - EXCERPT // 2)
    return ("… " if start else "") + excerpt(text[start:], EXCERPT)
