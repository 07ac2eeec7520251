"""The export stage: check and measure the kept records, write every file, report the figures."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import polars as pl
from transformers import PreTrainedTokenizerBase

from curation.core.stage import StageResult, split_rejects
from curation.core.stats import StageStats
from curation.export.card import dataset_card, summary
from curation.export.checks import STAGE, Row, record_problem
from curation.export.consumers import axolotl_yaml, llamafactory_info
from curation.export.formats import FORMAT_KIND, OUTPUTS, outputs_of, write_json, write_rows
from curation.export.hf import write_hf
from curation.export.render import Checked, measure
from curation.export.special import SIDES, SpecialTokens
from schemas.chat import apply_template
from schemas.export import ExportConfig, ExportedSet, ExportFormat
from schemas.figures import ExportFigures, ExportFile, TokenFigures, TokenHistogram
from schemas.record import RECORD_SCHEMA


def export_run(
    records: pl.DataFrame,
    cfg: ExportConfig,
    out_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    run_stats: list[StageStats],
) -> StageResult:
    """Check, measure and write the exported sets; records that cannot be exported are rejects.

    `tokenizer` is the target model's (its own template, or `cfg.chat_template` put on a copy);
    `run_stats` is the run's stage entries so far (they go into the dataset card).
    The result's `extra` holds the export figures for stats.json.
    """
    tokenizer = apply_template(tokenizer, cfg.chat_template)
    kinds = sorted({FORMAT_KIND[f] for f in cfg.formats})
    rows = records.select("id", "source", "kind", "messages", "chosen", "rejected").to_dicts()
    checked = [Checked(row) if row["kind"] in kinds else None for row in rows]
    exported = [item for item in checked if item is not None]
    special = SpecialTokens(tokenizer, cfg.special_tokens)
    _check(exported, tokenizer, cfg, special)
    if special.escaped:  # kept.parquet holds what the sets hold
        records = records.with_columns(
            pl.Series(side, [row[side] for row in rows], dtype=RECORD_SCHEMA[side]) for side in SIDES
        )
    result = split_rejects(
        records,
        STAGE,
        pl.Series([c.reason if c else None for c in checked], dtype=pl.String),
        pl.Series([c.detail if c else None for c in checked], dtype=pl.String),
    )
    sets = {kind: [c.row for c in exported if c.reason is None and c.row["kind"] == kind] for kind in kinds}

    _clear(out_dir)
    files = _write_files(out_dir, cfg.formats, sets)
    result.figures = figures = ExportFigures(
        chat_template=cfg.chat_template or "tokenizer",
        tokenizer=tokenizer.name_or_path,
        max_seq_length=cfg.max_seq_length,
        overlength=cfg.overlength,
        special_tokens=special.figures(),
        files=files,
        splits={kind: _hf_set(out_dir, kind, sets[kind], exported, cfg) for kind in kinds},
        tokens={kind: _token_stats(exported, kind, cfg) for kind in kinds},
        not_exported=dict(Counter(r["kind"] for r, c in zip(rows, checked, strict=True) if c is None)),
    )
    write_json(out_dir / "dataset_info.json", llamafactory_info(files))
    (out_dir / "axolotl.yaml").write_text(axolotl_yaml(out_dir, files, cfg), encoding="utf-8")
    scores = _score_stats(records, [r["id"] for set_rows in sets.values() for r in set_rows])
    card = dataset_card(out_dir.parent.name, figures, result, sets, scores, run_stats)
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    return result


def _check(checked: list[Checked], tokenizer: PreTrainedTokenizerBase, cfg: ExportConfig, special: SpecialTokens) -> None:
    """Mark every record that breaks a rule or holds a special token (or escape it); measure the rest."""
    for item in checked:
        problem = record_problem(item.row)
        if problem:
            item.reject(*problem)
        else:
            special.check(item)
    measure(checked, tokenizer, cfg)


def _clear(out_dir: Path) -> None:
    """Remove what an earlier export wrote, so no file of it outlives a change of formats."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def _hf_set(out_dir: Path, kind: str, rows: list[Row], exported: list[Checked], cfg: ExportConfig) -> ExportedSet:
    """hf/<kind>, or why there is none: no record of the kind reached export, or all were rejected."""
    if rows:
        return write_hf(out_dir / "hf" / kind, kind, rows, cfg)
    reasons = Counter(c.reason for c in exported if c.row["kind"] == kind)
    if not reasons:
        return ExportedSet(not_written=f"no rows: no {kind} records reached export")
    found = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common())
    return ExportedSet(not_written=f"no rows: all {reasons.total()} {kind} records rejected at export ({found})")


def _write_files(out_dir: Path, formats: list[ExportFormat], sets: dict[str, list[Row]]) -> dict[str, ExportFile]:
    """Each selected format's file; rows that do not fit a format are counted, empty files skipped."""
    written = {}
    for name, kind, formatter in outputs_of(formats):
        rows = [out for row in sets[kind] if (out := formatter(row)) is not None]
        entry = ExportFile(rows=len(rows), skipped=len(sets[kind]) - len(rows))
        if rows:
            write_rows(out_dir / name, rows)
            entry.system_column = any("system" in r for r in rows)
        written[name] = entry
    return written


def _token_stats(checked: list[Checked], kind: str, cfg: ExportConfig) -> TokenFigures:
    """Lengths of every rendered record of a kind, and what became of those over the limit."""
    measured = [c for c in checked if c.row["kind"] == kind and c.tokens is not None]
    over = [c for c in measured if c.tokens > cfg.max_seq_length]
    return TokenFigures.model_validate({
        **summary(c.tokens for c in measured),  # count, then min .. max when there are any
        "over_max_seq_length": len(over),
        "dropped_too_long": sum(c.reason == "too_long" for c in over),
        "kept_for_truncation": sum(c.truncated for c in over),
        "histogram": token_histogram([c.tokens for c in measured], cfg.max_seq_length),
    })


def token_histogram(tokens: list[int], limit: int, bins_to_limit: int = 8) -> TokenHistogram:
    """Counts in bins of limit / bins_to_limit tokens up to twice the limit, then one tail bin:
    the report draws it with the limit marked."""
    width = max(1, -(-limit // bins_to_limit))
    last = 2 * bins_to_limit  # the tail bin: 2 x limit and more
    counts = [0] * (last + 1)
    for n in tokens:
        counts[min(n // width, last)] += 1
    return TokenHistogram(bin_width=width, counts=counts)


def _score_stats(records: pl.DataFrame, ids: list[str]) -> dict[str, dict[str, float]]:
    """Distributions of numeric `score` / `*_score` columns over the exported records."""
    columns = [
        name
        for name, dtype in records.schema.items()
        if (name == "score" or name.endswith("_score")) and dtype.is_numeric()
    ]
    chosen = records.filter(pl.col("id").is_in(ids))
    return {name: summary(chosen[name].drop_nulls().to_list()) for name in columns}
