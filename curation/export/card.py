"""The dataset card (README.md): sets and splits, token lengths, sources with their licences,
the run's curation stages and score distributions."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from curation.core.stage import StageResult
from curation.core.stats import StageStats
from curation.export.checks import STAGE, Row
from schemas.figures import ExportFigures

# "path:line", "path#row", "path[split]#row"; synthesis adds "@start-end"; a preference pair is
# "preference:" + the source of its prompt's first record.
_SOURCE_SUFFIX = re.compile(r"(@\d+-\d+)?$")
_SOURCE_ROW = re.compile(r"(:\d+|(\[[^\]/]*\])?#(\d+|[^/#]*\[\d+\]))$")
_CATALOGUES = ("README.md", "SOURCES.md")
_CATALOGUE_DEPTH = 4  # the file's folder and three above
_SUMMARY = ("count", "min", "mean", "p50", "p95", "max")


def summary(values: Iterable[float]) -> dict[str, float]:
    """count, min, mean, p50, p95, max; nearest-rank percentiles, so each is a value that occurs."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}

    def rank(q: float) -> float:
        return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]

    return {
        "count": len(ordered),
        "min": ordered[0],
        "mean": round(sum(ordered) / len(ordered), 2),
        "p50": rank(0.5),
        "p95": rank(0.95),
        "max": ordered[-1],
    }


def source_file(source: str) -> str:
    """The input file a record came from (a pair: the file of its prompt's first answer)."""
    return _SOURCE_ROW.sub("", _SOURCE_SUFFIX.sub("", source.removeprefix("preference:"), count=1))


def licences(paths: Iterable[str]) -> dict[str, str]:
    """The licence a data catalogue near each file names for it, else "unknown".

    A catalogue is a README.md or SOURCES.md in the file's folder or one of the three above
    (like data/README.md) with a markdown table that has a file/path column and a licence column.
    """
    tables: dict[Path, list[tuple[str, str]]] = {}
    found = {}
    for shown in paths:
        path = Path(shown).resolve()
        found[shown] = "unknown"
        for folder in list(path.parents)[:_CATALOGUE_DEPTH]:
            if folder not in tables:
                tables[folder] = [e for name in _CATALOGUES for e in _catalogue_entries(folder / name)]
            relative = path.relative_to(folder).as_posix()
            match = next((licence for pattern, licence in tables[folder] if fnmatch(relative, pattern)), None)
            if match:
                found[shown] = match
                break
    return found


def _catalogue_entries(doc: Path) -> list[tuple[str, str]]:
    """(path pattern, licence) from the rows of the markdown tables in `doc` with a licence column."""
    if not doc.is_file():
        return []
    entries, columns = [], None
    for line in doc.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.lstrip().startswith("|"):
            columns = None  # a table ended
            continue
        cells = [c.strip().strip("`").strip() for c in line.strip().strip("|").split("|")]
        if columns is None:  # a table's first row is its header
            heads = [c.lower() for c in cells]
            licence = next((i for i, h in enumerate(heads) if "licen" in h), None)
            path = next((i for i, h in enumerate(heads) if h in ("file", "files", "path")), 0)
            columns = (path, licence)
        elif columns[1] is not None and len(cells) > max(columns) and not set("".join(cells)) <= set("-: "):
            entries.append((cells[columns[0]], cells[columns[1]]))
    return entries


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_card(
    name: str,
    stats: ExportFigures,
    result: StageResult,
    sets: dict[str, list[Row]],
    scores: dict[str, dict[str, float]],
    run_stats: list[StageStats],
) -> str:
    """README.md of the export: sets and splits, token lengths, sources, curation, scores."""
    template = stats.chat_template
    rendering = "the tokenizer's own" if template == "tokenizer" else f"the `{template}`"
    parts = [
        f"# {name}: curated fine-tuning data",
        f"Rendered with {rendering} chat template and measured with the tokenizer `{stats.tokenizer}`;"
        f" max_seq_length {stats.max_seq_length}, overlength rows: {stats.overlength}."
        " Train with the same template.",
        "## Sets",
        _table(
            ["file", "rows", "skipped (does not fit the format)"],
            ([file, e.rows, e.skipped] for file, e in stats.files.items()),
        ),
        _table(
            ["hf/ set", "train", "test", "note"],
            ([k, s.train, s.test, s.not_written or s.note or ""] for k, s in stats.splits.items()),
        ),
    ]
    if stats.not_exported:
        kept = ", ".join(f"{n} {kind}" for kind, n in stats.not_exported.items())
        parts.append(f"Kept but in no selected format: {kept}.")
    parts += [
        "## Token lengths",
        "Preference rows count the prompt with the longer answer.",
        _table(
            ["set", *_SUMMARY, "over max", "dropped (too_long)", "kept for truncation"],
            (
                [kind, *("" if v is None else v for v in (t.count, t.min, t.mean, t.p50, t.p95, t.max))]
                + [t.over_max_seq_length, t.dropped_too_long, t.kept_for_truncation]
                for kind, t in stats.tokens.items()
            ),
        ),
        "## Sources",
        _sources_table(sets),
        "## Curation",
        _curation_table(run_stats, result),
    ]
    if scores:
        parts += [
            "## Scores",
            _table(
                ["column", *_SUMMARY],
                ([column, *(s.get(k, "") for k in _SUMMARY)] for column, s in scores.items()),
            ),
        ]
    parts += [
        "## Loading",
        "- `datasets.load_from_disk(\"hf/sft\")`, `(\"hf/preference\")`: DatasetDicts for TRL"
        " (`messages`; `prompt`, `chosen`, `rejected` in the explicit conversational form)\n"
        "- LLaMA-Factory: copy the files and merge `dataset_info.json` into its data folder\n"
        "- Axolotl: `axolotl.yaml` has one config fragment per set",
    ]
    return "\n\n".join(parts) + "\n"


def _sources_table(sets: dict[str, list[Row]]) -> str:
    counts: dict[str, Counter[str]] = {}
    for kind, rows in sets.items():
        for row in rows:
            counts.setdefault(source_file(row["source"]), Counter())[kind] += 1
    found = licences(counts)
    kinds = sorted(sets)
    return _table(
        ["file", *kinds, "licence"],
        ([file, *(c[k] for k in kinds), found[file]] for file, c in sorted(counts.items())),
    )


def _curation_table(run_stats: list[StageStats], result: StageResult) -> str:
    """Every stage of the run with what it removed, then this export's own rejects."""
    stages = [*run_stats, result.stats(STAGE, result.kept.height + result.rejected.height)]
    rows = [[s.stage, s.rows_in, s.out, s.removed, s.reasons_text() or "-"] for s in stages]
    return _table(["stage", "in", "out", "removed", "by reason"], rows)
