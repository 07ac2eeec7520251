"""A run that cannot be used fails, named: an input file mostly lost at ingest stops the run
before any stage, and a run that keeps fewer than `execution.min_kept` records fails after its
run files are written (exit code 4 from the CLI; see test_cli)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.core.run import run_pipeline
from curation.core.stats import RunFailed, RunStats
from schemas.config import CurateConfig
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
