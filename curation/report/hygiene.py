"""The report's data-hygiene sections: benchmark contamination (per benchmark, with matched
records beside the benchmark text they contain), the input's language mix, and PII found."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from markupsafe import Markup

from curation.core.stats import RunStats
from curation.report.html import CLUSTER_EXCERPT, MAX_EXAMPLES, bar_chart
from curation.report.html import _example as example
from curation.report.html import _excerpt as excerpt

MATCHES = Path("decontamination") / "matches.parquet"
MAX_LANGUAGES = 20  # bars in the language chart; the rest are summed


def contamination(stats: RunStats, run_dir: Path, rejected: pl.LazyFrame | None) -> dict | None:
    entry = stats.stage("decontamination")
    if entry is None:
        return None
    benchmarks = entry.figures.get("benchmarks", {})
    rows = [{"name": name, **figures} for name, figures in benchmarks.items()]
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
            "ngram": entry.figures.get("ngram"), "min_coverage": entry.figures.get("min_coverage")}


def languages(stats: RunStats) -> dict | None:
    entry = stats.stage("filters")
    mix = entry.figures.get("languages") if entry else None
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


def pii(stats: RunStats) -> dict | None:
    entry = stats.stage("pii")
    if entry is None:
        return None
    return {"action": entry.figures.get("action"), "records": entry.figures.get("records_with_pii", 0),
            "found": entry.figures.get("found", {}), "removed": entry.removed, "rows_in": entry.rows_in}
