"""The plan's one list of steps (curation/core/plan.py STEPS): a stage is its code plus one line
there, and that line alone puts it in order, checkpoints it, counts it in stats.json, lists it in
the CLI's help and `curate validate`, and declares the record columns it reads and writes, which
are checked before any step runs and again when it runs. The stages here exist only in this test."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.core import plan
from curation.core.inputs import load_config
from curation.core.plan import PlanContext, Step, StepSpec, build_plan
from curation.core.run import run_pipeline
from curation.core.sections import configured, steps_line
from curation.core.stage import Stage, StageError, StageResult, split_rejects
from flows import cli
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA, records_frame


def answer(column: str = "messages") -> pl.Expr:
    return pl.col(column).list.last().struct.field("content")


def no_shouting(ctx: PlanContext) -> Step:
    """A test-only filter: rejects a record whose answer is all capitals."""

    def run(records: pl.DataFrame) -> StageResult:
        shouted = answer() == answer().str.to_uppercase()
        return split_rejects(records, "no_shouting", records.select(pl.when(shouted).then(pl.lit("shouting"))).to_series())

    return Step(Stage("no_shouting", run), ())


def count_words(ctx: PlanContext) -> Step:
    """Writes a work column: the answer's words."""

    def run(records: pl.DataFrame) -> StageResult:
        counted = records.with_columns(answer().str.split(" ").list.len().alias("words"))
        return StageResult(counted, pl.DataFrame(schema=REJECT_SCHEMA))

    return Step(Stage("count_words", run), ())


def drop_short(ctx: PlanContext) -> Step:
    """Reads the work column count_words writes."""

    def run(records: pl.DataFrame) -> StageResult:
        reason = records.select(pl.when(pl.col("words") < 5).then(pl.lit("short_answer"))).to_series()
        return split_rejects(records, "drop_short", reason)

    return Step(Stage("drop_short", run), ())


def with_filters(ctx: PlanContext) -> bool:
    # A test-only stage has no config section (config models forbid unknown keys): its line says
    # when it runs with a predicate on the config instead.
    return ctx.config.filters is not None


def after_filters(monkeypatch: pytest.MonkeyPatch, *lines: StepSpec) -> None:
    """The plan with `lines` after the filters: what adding them to STEPS does."""
    at = [spec.name for spec in plan.STEPS].index("filters") + 1
    monkeypatch.setattr(plan, "STEPS", (*plan.STEPS[:at], *lines, *plan.STEPS[at:]))


def write_config(tmp_path: Path) -> Path:
    rows = [{"instruction": f"Question number {i} about rivers?", "output": f"Answer {i}: rivers flow downhill."}
            for i in range(20)]
    rows += [{"instruction": "Why so loud?", "output": "RIVERS FLOW DOWNHILL."}, rows[3]]  # a shout, a duplicate
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "config.yaml"
    sections = {"filters": {"length": {"min_words": 3}}, "dedup": {"exact": {}}}
    path.write_text(yaml.safe_dump({"inputs": [{"path": "data.jsonl"}], **sections}))
    return path


def test_a_stage_is_its_code_plus_one_line_in_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    after_filters(monkeypatch, StepSpec("no_shouting", "no_shouting", no_shouting, when=with_filters, reads=("messages",)))
    path = write_config(tmp_path)
    assert "-> filters -> no_shouting -> decontamination ->" in steps_line()  # the CLI's help
    assert configured(load_config(path)) == ["filters", "no_shouting", "dedup"]
    assert cli.main(["validate", str(path)]) == 0
    assert "sections: filters, no_shouting, dedup)" in capsys.readouterr().out

    out = tmp_path / "run"
    stats = run_pipeline(load_config(path), out)
    assert [s.stage for s in stats.stages] == ["ingest", "filters", "no_shouting", "dedup_exact"]
    assert stats.stage("no_shouting").removed_by_reason == {"shouting": 1}
    assert stats.invariant.holds and stats.totals.kept == 20
    rejected = pl.read_parquet(out / "rejected.parquet").filter(pl.col("stage") == "no_shouting")
    assert rejected["source"].to_list() == ["data.jsonl:21"]  # where it came from

    def stamps() -> dict[str, int]:
        return {p.parent.name: p.stat().st_mtime_ns for p in sorted((out / ".checkpoints").glob("*/manifest.json"))}

    before = stamps()
    assert list(before) == ["00-ingest", "01-filters", "02-no_shouting", "03-dedup_exact"]
    again = run_pipeline(load_config(path), out)  # checkpointed: a rerun restores it
    assert stamps() == before and again.stage("no_shouting").removed == 1


def test_a_step_reading_a_column_no_earlier_step_writes_fails_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = StepSpec("drop_short", "drop_short", drop_short, when=with_filters, reads=("words",))
    after_filters(monkeypatch, reader)
    config = load_config(write_config(tmp_path))
    message = r"step drop_short reads \['words'\], which no earlier step writes \(ingest -> filters\)"
    with pytest.raises(StageError, match=message):
        build_plan(config, tmp_path / "run", progress=False)
    with pytest.raises(StageError, match="step drop_short reads"):
        run_pipeline(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # found before anything ran, ingest included

    # Written by an earlier line, the column travels to the step that reads it, and ends with the run.
    writer = StepSpec("count_words", "count_words", count_words, when=with_filters, writes=("words",))
    after_filters(monkeypatch, writer, reader)
    stats = run_pipeline(config, tmp_path / "run")
    assert stats.stage("drop_short").removed_by_reason == {"short_answer": 1}  # the four-word shout
    assert pl.read_parquet(tmp_path / "run" / "kept.parquet").columns == list(RECORD_SCHEMA)


def test_a_stage_checks_the_columns_it_declares_when_it_runs() -> None:
    empty = {"messages": None, "chosen": None, "rejected": None, "meta": "{}"}
    records = records_frame([{"id": "a", "source": "t:1", "kind": "raw", "text": "hello there", **empty}])

    def keep(frame: pl.DataFrame) -> StageResult:
        return split_rejects(frame, "x", pl.Series([None], dtype=pl.String))

    with pytest.raises(StageError, match=r"stage x: input lacks columns \['words'\]"):
        Stage("x", keep, reads=("words",))(records)
    with pytest.raises(StageError, match=r"stage x: output lacks columns \['words'\]"):
        Stage("x", keep, writes=("words",))(records)
    assert Stage("x", keep, reads=("text",))(records).kept.height == 1
