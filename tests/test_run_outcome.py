"""A run that cannot be used fails, named: an input file mostly lost at ingest stops the run
before any stage, and a run that keeps fewer than `execution.min_kept` records fails after its
run files are written (exit code 4 from the CLI; see test_cli)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from curation.core.run import run_pipeline
from curation.core.stats import RunFailed, RunStats, StageStats, stage_stats
from schemas.config import CurateConfig
from schemas.figures import IngestFigures, JuryFigures, MinhashFigures
from tests.test_ingest import HH_CHOSEN, HH_REJECTED


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("in_memory", [False, True])
def test_an_input_file_mostly_rejected_at_ingest_stops_the_run(tmp_path: Path, in_memory: bool) -> None:
    hh = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}] * 3)
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "a fine document"}])
    config = CurateConfig(inputs=[{"path": str(good)}, {"path": str(hh), "shape": "preference"}])
    with pytest.raises(RunFailed) as failed:
        run_pipeline(config, tmp_path / "run", in_memory=in_memory)
    message = str(failed.value)
    assert "execution.max_ingest_rejected" in message
    assert "hh.jsonl (jsonl, ascii, preference): 3 of 3 rejected (missing_fields 3)" in message
    assert "good.jsonl" not in message
    assert not (tmp_path / "run" / "kept.parquet").exists()  # stopped before any stage
    config.execution.max_ingest_rejected = 1.0
    assert run_pipeline(config, tmp_path / "run2", in_memory=in_memory).totals.kept == 1


def test_a_run_that_keeps_nothing_fails_after_writing_its_files(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "short.jsonl", [{"text": "too short"}, {"text": "also short"}])
    config = CurateConfig(inputs=[{"path": str(data)}], filters={"length": {"min_words": 5}})
    expected = r"kept 0 of 2 records, fewer than execution.min_kept \(1\); top reasons: filters too_few_words 2"
    with pytest.raises(RunFailed, match=expected):
        run_pipeline(config, tmp_path / "run")
    assert RunStats.read(tmp_path / "run").totals.rejected == 2  # the run files say where the rows went
    config.execution.min_kept = 0  # e.g. a scheduled refresh that may find nothing new
    assert run_pipeline(config, tmp_path / "run").totals.kept == 0


def test_a_rerun_without_a_section_removes_its_stale_output(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
        for i in range(4)
    ])
    out = tmp_path / "run"
    (out / "export" / "hf" / "sft").mkdir(parents=True)  # what an earlier run with export: wrote
    (out / "jury").mkdir()
    (out / "decontamination").mkdir()
    (out / "decontamination" / "matches.parquet").write_bytes(b"")  # an earlier run's matches
    run_pipeline(CurateConfig(inputs=[{"path": str(data)}], jury=None), out)  # the same --out, none of the sections
    assert not (out / "export").exists()  # `curate train --data` cannot pick up the old sets
    assert not (out / "jury").exists() and not (out / "decontamination").exists()
    assert (out / "kept.parquet").is_file()


MINHASH_ENTRY = {"stage": "dedup_minhash", "in": 3, "out": 3, "removed": 0, "removed_by_reason": {}, "seconds": 0.1,
                 "bands": 2, "rows": 3, "candidate_pairs": 0}


def test_a_stage_entry_reads_its_figures_as_its_stage_model_and_writes_them_back_flat() -> None:
    entry = StageStats.model_validate(MINHASH_ENTRY)
    figures = entry.figures_as(MinhashFigures)
    assert (figures.bands, figures.rows, figures.candidate_pairs, figures.confirmed_pairs) == (2, 3, 0, None)
    # Figures the stage did not set stay out of the file: the layout is exactly what was read.
    assert list(entry.model_dump(by_alias=True)) == list(MINHASH_ENTRY)
    assert entry.model_dump(by_alias=True) == MINHASH_ENTRY
    with pytest.raises(TypeError, match="MinhashFigures, not JuryFigures"):
        entry.figures_as(JuryFigures)


@pytest.mark.parametrize("change", [
    {"band": 2},  # a renamed (unknown) figure
    {"bands": "two"},  # a wrong type
    {"bands": None},
    {"stage": "dedup_exact"},  # another stage's figures
    {"stage": "a_stage_without_figures"},
])
def test_a_figure_that_drifted_from_its_model_fails_validation(change: dict) -> None:
    with pytest.raises(ValidationError):
        StageStats.model_validate({**MINHASH_ENTRY, **change})
    missing = {k: v for k, v in MINHASH_ENTRY.items() if k != "candidate_pairs"}
    with pytest.raises(ValidationError, match="candidate_pairs"):
        StageStats.model_validate(missing)


def test_stage_stats_takes_only_the_figures_model_of_its_stage() -> None:
    figures = MinhashFigures(bands=2, rows=3, candidate_pairs=0)
    assert stage_stats("dedup_minhash", 3, 3, {}, 0.1, figures).figures == figures
    with pytest.raises(ValidationError):
        stage_stats("dedup_exact", 3, 3, {}, 0.1, figures)
    with pytest.raises(ValidationError):
        StageStats(stage="dedup_exact", rows_in=3, out=3, removed=0, figures=figures)


def test_stats_json_reads_back_to_the_same_file_with_typed_figures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{"text": f"document number {i} has enough words to pass the default filters here"} for i in range(6)]
    data = write_jsonl(tmp_path / "docs.jsonl", rows + rows[:2])
    config = CurateConfig(inputs=[{"path": str(data)}], filters={}, dedup={"exact": {}, "minhash": {}})
    run_pipeline(config, tmp_path / "run")
    text = (tmp_path / "run" / "stats.json").read_text()
    stats = RunStats.read(tmp_path / "run")
    assert stats.to_json() == text
    ingest = stats.figures(IngestFigures)
    assert ingest is not None and ingest.rows_read == 8 and ingest.files[0].records == 8
    minhash = stats.figures(MinhashFigures)
    assert minhash is not None and minhash.bands > 0
    assert stats.stage("dedup_exact").removed == 2 and stats.figures(JuryFigures) is None

    # A stats.json of an older version (a figure it did not write yet): one line naming the file and
    # the field, exit 2 from `curate report`, never a traceback; `curate train` skips such a run.
    from flows.cli import main

    older = json.loads(text)
    del older["stages"][0]["control_chars_removed"]
    (tmp_path / "run" / "stats.json").write_text(json.dumps(older))
    assert main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"{tmp_path / 'run' / 'stats.json'}: not a stats.json this version reads (stages.0.control_chars_removed" in err


def test_a_run_without_prefect_publishes_and_reports_like_the_flow_each_call_through_around(tmp_path: Path) -> None:
    from curation.curate import curate

    data = write_jsonl(tmp_path / "docs.jsonl", [{"text": f"document number {i} says something"} for i in range(3)])
    config = CurateConfig(inputs=[{"path": str(data)}], publish={"dir": str(tmp_path / "published")})
    names: list[str] = []

    def around(call):
        names.append(call.name)
        return call.run()

    outcome = curate(config, tmp_path / "config.yaml", tmp_path / "run", around)
    assert outcome.failure is None and outcome.stats is not None and outcome.stats.totals.kept == 3
    assert names == ["ingest", "write_run", "publish", "report"]
    published = json.loads((tmp_path / "run" / "publish.json").read_text())
    assert Path(published["version_dir"]) == tmp_path / "published" / "v0001"
    assert (tmp_path / "run" / "report.html").is_file()
    again = CurateConfig(inputs=[{"path": str(data)}], publish={"dir": str(tmp_path / "published")})
    assert curate(again, tmp_path / "config.yaml", tmp_path / "run2").stats is None  # no new inputs: nothing runs

    # Too few kept: the report is written, nothing is published, the failure is the caller's to raise.
    write_jsonl(tmp_path / "more.jsonl", [{"text": "short"}])
    few = CurateConfig(inputs=[{"path": str(tmp_path / "more.jsonl")}], filters={"length": {"min_words": 5}},
                       publish={"dir": str(tmp_path / "published")})
    outcome = curate(few, tmp_path / "config.yaml", tmp_path / "run3")
    assert isinstance(outcome.failure, RunFailed)
    assert (tmp_path / "run3" / "report.html").is_file() and not (tmp_path / "run3" / "publish.json").exists()
    assert (tmp_path / "published" / "LATEST").read_text().strip() == "v0001"
