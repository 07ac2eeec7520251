"""The `pii` stage: e-mail addresses, phone numbers, IP addresses, card numbers and secrets
replaced by typed placeholders (`<EMAIL>`, ...) in every text of a record (raw text, every turn,
chosen / rejected answers, string values in meta).

`action: redact` keeps the record with `meta.pii` = found kinds and counts; `drop` rejects it
(reason `pii`, the kinds and counts in `detail`) and the rejected copy is the redacted one too, so
the PII itself is written nowhere in the run directory. The stage runs first in the plan (before
synthesis, filters and the jury): no later stage, reject, checkpoint or prompt sees the original
text: the rejects ingest made before it (malformed rows keep their input line in `raw`) are
rewritten redacted, and the ingest checkpoint's corpora removed, once this stage's checkpoint
is written.

polars finds the records where a kind could occur (curation.pii.detect.PREFILTER); only those are
scanned and rebuilt in Python. Row count and order never change.
"""

from __future__ import annotations

from collections import Counter

import orjson
import polars as pl

from curation.core.engine import Engine, LocalEngine
from curation.core.stage import Decision, Stage, StageResult, split_each
from curation.pii.detect import PREFILTER, redact
from schemas.config import PiiConfig
from schemas.figures import PiiFigures
from schemas.record import meta_json

STAGE = "pii"
TURN_SIDES = ("messages", "chosen", "rejected")


def build_pii_stage(cfg: PiiConfig, engine: Engine | None = None) -> Stage:
    """`engine` scans partitions of the records (default: this process)."""

    def scan(records: pl.DataFrame) -> tuple[pl.DataFrame, list[Counter[str]]]:
        return redact_rows(records, cfg)

    def run(records: pl.DataFrame) -> StageResult:
        counts: Counter[str] = Counter()
        records_with_pii = 0

        def decide(shard: pl.DataFrame, lo: int) -> Decision:
            nonlocal records_with_pii
            parts = (engine or LocalEngine()).map(scan, shard, STAGE)
            scanned = pl.concat([p[0] for p in parts]) if parts else shard
            found = [c for p in parts for c in p[1]]
            for c in found:
                counts.update(c)
            records_with_pii += sum(1 for c in found if c)
            reason = [STAGE if (c and cfg.action == "drop") else None for c in found]
            detail = [_detail(c) if r else None for c, r in zip(found, reason, strict=True)]
            return scanned, pl.Series(reason, dtype=pl.String), pl.Series(detail, dtype=pl.String), None

        result = split_each(records, STAGE, decide)
        result.figures = PiiFigures(action=cfg.action, records_with_pii=records_with_pii, found=dict(sorted(counts.items())))
        return result

    return Stage(STAGE, run, streams=True)


def redact_rows(frame: pl.DataFrame, cfg: PiiConfig) -> tuple[pl.DataFrame, list[Counter[str]]]:
    """Records (or rejects: their `raw` input text too) with PII of `cfg.kinds` replaced, and the
    kinds found per row."""
    kinds = cfg.kinds
    found = [Counter() for _ in range(frame.height)]
    if not kinds or not frame.height:
        return frame, found
    prefilter = "|".join(f"(?:{PREFILTER[k]})" for k in kinds)
    candidate = frame.select(_all_strings(frame.columns).str.contains(prefilter).fill_null(False)).to_series()
    rows = candidate.arg_true().to_list()
    if not rows:
        return frame, found
    redacted = []
    for row, record in zip(rows, frame[rows].iter_rows(named=True), strict=True):
        record, found[row] = _redacted(record, cfg)
        redacted.append(record)
    changed = pl.DataFrame(redacted, schema=frame.schema).with_columns(pl.Series("_row", rows, pl.UInt32))
    merged = frame.with_row_index("_row").update(changed, on="_row", include_nulls=True)
    return merged.drop("_row").select(list(frame.columns)), found


def redacted_frame(frame: pl.DataFrame, cfg: PiiConfig) -> pl.DataFrame:
    return redact_rows(frame, cfg)[0]


def _all_strings(columns: list[str]) -> pl.Expr:
    """Every text of a record (and a reject's raw input) in one string, for the prefilter."""
    turns = [pl.col(side).list.eval(pl.element().struct.field("content")).list.join("\n") for side in TURN_SIDES]
    raw = [pl.col("raw")] if "raw" in columns else []
    return pl.concat_str([pl.col("text"), *turns, pl.col("meta"), *raw], separator="\n", ignore_nulls=True)


def _redacted(record: dict, cfg: PiiConfig) -> tuple[dict, Counter[str]]:
    found: Counter[str] = Counter()

    def clean(text: str) -> str:
        new, counts = redact(text, cfg.kinds, skip_code=cfg.skip_code, keep_documentation=cfg.keep_documentation)
        found.update(counts)
        return new

    for column in ("text", "raw"):
        if record.get(column) is not None:
            record[column] = clean(record[column])
    for side in TURN_SIDES:
        if record[side] is not None:
            record[side] = [{**turn, "content": clean(turn["content"])} for turn in record[side]]
    if record["meta"] is not None or "raw" not in record:  # an unparsed input row has no meta
        meta = _clean_json(orjson.loads(record["meta"]) if record["meta"] else {}, clean)
        if found:
            meta["pii"] = dict(sorted(found.items()))
        record["meta"] = meta_json(meta)
    return record, found


def _clean_json(value, clean):
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_clean_json(v, clean) for v in value]
    if isinstance(value, dict):
        return {k: _clean_json(v, clean) for k, v in value.items()}
    return value


def _detail(found: Counter[str]) -> str:
    return "found " + ", ".join(f"{kind} x{n}" for kind, n in sorted(found.items())) + " (stored redacted)"
