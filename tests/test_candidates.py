"""Candidate runs through `curate train`: each a Prefect subflow, evaluated the same way, ranked
by train.select_by, the winner linked as train/best, and a re-run resuming per candidate.

Tiny Llamas with the real SmolLM2 tokenizer (test_training's fixtures) on real GSM8K rows; the
jury is a scripted judge on the local OpenAI-compatible server.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from datasets import DatasetDict
from openai_server import FakeOpenAI, Reply, rating_reply
from test_training import FAST, pref_data, sft_data, tiny_model, tokenizer_dir  # noqa: F401

from schemas.bundled import smollm2_dir
from schemas.train import TrainConfig, TrainingInputError

ANSWERS = re.compile(r"Answer 1:\n(.*)\n\nAnswer 2:\n?(.*)", re.DOTALL)  # an empty last answer is stripped


def longer_first(body: dict) -> Reply:
    """A judge that prefers the longer answer, in either position."""
    if (shown := ANSWERS.search(body["messages"][0]["content"])) is None:
        return Reply(text='{"ok": true}')  # the endpoint's probe
    first, second = shown.groups()
    return rating_reply(body, 1 if len(first) >= len(second) else 2, scale_max=2)


@pytest.mark.slow
def test_candidates_are_ranked_and_a_rerun_resumes_per_candidate(
    tokenizer_dir: Path, public_data: Path, tmp_path: Path, openai_server: FakeOpenAI, curate_here  # noqa: F811
) -> None:
    openai_server.handler = longer_first
    base = tiny_model(tmp_path / "tiny-llama", tokenizer_dir)
    rows = sft_data(public_data, 4)
    run = tmp_path / "run"
    DatasetDict({"train": rows, "test": rows}).save_to_disk(str(run / "export" / "hf" / "sft"))
    (tmp_path / "in.jsonl").write_text('{"text": "unused"}\n')
    judge = {"endpoint": {"base_url": openai_server.base_url, "model": "judge", "max_retries": 1, "timeout": 10}}
    config = {
        "inputs": [{"path": str(tmp_path / "in.jsonl")}],
        "jury": {"judges": [{"name": "helpful", "rubric": "helpfulness", "model": judge}], "cache_dir": str(tmp_path / "cache")},
        "train": {
            "base_model": str(base),
            "method": "sft",
            "report_to": [],
            "max_seq_length": 256,
            "sft": {**FAST, "max_steps": 4, "learning_rate": 1e-2},
            "eval": {"rouge_sample": 3, "max_new_tokens": 8},
            "select_by": ["eval_loss", "win_rate"],
            "candidates": [
                {"name": "control", "sft": {"learning_rate": 0}},  # the adapter stays a no-op
                {"name": "tuned"},
            ],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    done = curate_here("train", str(path), "--data", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "train" / "summary.json").read_text())
    board = {row["name"]: row for row in summary["leaderboard"]}
    assert summary["best"] == "tuned" and summary["leaderboard"][0]["name"] == "tuned"
    assert board["tuned"]["eval_loss"] < board["control"]["eval_loss"]
    control = summary["candidates"]["control"]
    assert control["metrics"]["eval_loss"] == pytest.approx(control["base_metrics"]["eval_loss"])  # lr 0
    assert (run / "train" / "best").resolve() == (run / "train" / "tuned" / "sft" / "adapter").resolve()
    assert "best: tuned" in done.stdout and "leaderboard by eval_loss, then win_rate" in done.stdout
    assert "tuned sft: 4 steps on 4 train rows, train loss" in done.stdout
    for name, candidate in summary["candidates"].items():
        assert (run / "train" / name / "result.json").is_file()
        assert len(json.loads((run / "train" / name / "generations.json").read_text())) == 3
        assert all(math.isfinite(candidate["metrics"][m]) for m in ("eval_loss", "rouge_l", "bertscore"))
        win = candidate["win_rate"]
        assert win["win"] + win["tie"] + win["loss"] + win["unjudged"] == 3 and win["order_consistent"] is not None
        assert set(candidate["errors"]["tuned"]["counts"]) >= {"truncated", "repetitive", "misspelled"}

    # A sweep stopped after its first candidate: the re-run trains only the second.
    kept = {"control": (run / "train" / "control" / "result.json").stat().st_mtime_ns}
    (run / "train" / "tuned" / "result.json").unlink()
    calls = sum(bool(ANSWERS.search(body["messages"][0]["content"])) for body in openai_server.calls)
    again = curate_here("train", str(path), "--data", str(run))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {name: (run / "train" / name / "result.json").stat().st_mtime_ns for name in kept} == kept
    assert (run / "train" / "tuned" / "result.json").is_file()
    # The same answers again: the verdicts came from the cache.
    assert sum(bool(ANSWERS.search(body["messages"][0]["content"])) for body in openai_server.calls) == calls
    assert json.loads((run / "train" / "summary.json").read_text())["leaderboard"] == summary["leaderboard"]


def test_training_stops_before_any_step_when_a_set_it_needs_was_not_written(tmp_path: Path) -> None:
    """A candidate's dpo needs hf/preference; export wrote none (a small run without pairs):
    the check before training says so, with export's reason, before any candidate trains."""
    from stats_entries import export_entry

    from curation.core.stats import RunStats, Totals, unwritten_sets
    from schemas.export import ExportedSet
    from training.stages import check_stages

    train = {"method": "sft", "candidates": [{"name": "plain"}, {"name": "paired", "method": "sft_dpo"}]}
    assert TrainConfig.model_validate(train).sets_needed() == ["preference", "sft"]
    run = tmp_path / "run"
    (run / "export" / "hf" / "sft").mkdir(parents=True)
    reason = "no rows: all 1 preference records rejected at export (same_chosen_rejected 1)"
    splits = {"sft": ExportedSet(train=4, test=1), "preference": ExportedSet(not_written=reason)}
    export = export_entry(6, 5, splits)
    RunStats(stages=[export], totals=Totals(ingested=6, kept=5, rejected=1)).write(run)
    config = TrainConfig.model_validate(train)
    with pytest.raises(TrainingInputError, match=re.escape(f"(export/hf/preference: {reason})")):
        check_stages(config, run, unwritten_sets(run, config.sets_needed()))  # as the train flow calls it
    # Without the run's stats (training alone): the set is still named, with the generic reason.
    with pytest.raises(TrainingInputError, match=re.escape("(export/hf/preference: not written: curate with an")):
        check_stages(config, run)
    assert not (run / "train").exists()


def exported_run(run: Path, public_data: Path) -> Path:
    """A run's exported sets as training reads them: 4 GSM8K conversations, 4 Orca DPO pairs (the
    third pair's prompt alone is ~750 tokens)."""
    for name, rows in (("sft", sft_data(public_data, 4)), ("preference", pref_data(public_data, 4))):
        DatasetDict({"train": rows}).save_to_disk(str(run / "export" / "hf" / name))
    return run


def test_every_stage_of_every_candidate_is_checked_before_any_trains(public_data: Path, tmp_path: Path) -> None:
    from training.stages import check_stages

    run = exported_run(tmp_path / "run", public_data)
    train = {"base_model": str(smollm2_dir()), "report_to": [], "max_seq_length": 1024, "dpo": {"batch_size": 1}}
    check_stages(TrainConfig.model_validate(train), run)  # every row fits
    # The second candidate's DPO set does not fit: found before the first candidate's SFT trains.
    candidates = [{"name": "wide"}, {"name": "tight", "max_seq_length": 200}]
    with pytest.raises(TrainingInputError, match=re.escape(
        "candidate tight: dpo: 1 of 4 rows of the train set (25.0%) do not fit train.max_seq_length 200"
    )):
        check_stages(TrainConfig.model_validate({**train, "candidates": candidates}), run)
    check_stages(TrainConfig.model_validate({**train, "candidates": candidates, "max_dropped": 0.25}), run)


def test_a_set_that_does_not_fit_stops_curate_train_with_one_message(
    public_data: Path, tmp_path: Path, curate_here
) -> None:
    run = exported_run(tmp_path / "run", public_data)
    (tmp_path / "in.jsonl").write_text('{"text": "unused"}\n')
    train = {"base_model": str(smollm2_dir()), "report_to": [], "max_seq_length": 200, "dpo": {"batch_size": 1}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"inputs": [{"path": str(tmp_path / "in.jsonl")}], "train": train}))
    done = curate_here("train", str(path), "--data", str(run))
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("curate: error:") == 1 and "Traceback" not in done.stderr
    assert "curate: error: dpo: 1 of 4 rows of the train set (25.0%) do not fit train.max_seq_length 200" in done.stderr
    assert "more than train.max_dropped 0.1 allows" in done.stderr
    assert not (run / "train" / "sft").exists()  # refused before SFT, the first stage, trained
