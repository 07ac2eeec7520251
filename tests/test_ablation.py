"""Data ablations (train.ablation): the variants' data (curation/export/ablation.py) and their
training, evaluation on the same held-out rows and summary (training/ablation.py, flows/train.py).

Records are real GSM8K conversations; the training test curates them with `curate all` and trains
test_training's tiny Llama.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk
from test_training import FAST, jsonl, tiny_model, tokenizer_dir  # noqa: F401

from curation.export.ablation import held_out_ids, write_variants
from curation.export.hf import write_hf
from schemas.export import ExportConfig
from schemas.record import records_frame, rejects_frame
from schemas.train import Ablation, TrainConfig, TrainingInputError


def conversation(row: dict) -> list[dict]:
    return [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]


def record(i: int, messages: list[dict] | None) -> dict:
    return {"id": f"r{i}", "source": f"gsm8k.jsonl:{i}", "kind": "sft", "text": None, "messages": messages,
            "chosen": None, "rejected": None, "meta": None}


def reject(rec: dict, stage: str) -> dict:
    return {**rec, "stage": stage, "reason": f"{stage}_reason", "detail": None, "duplicate_of": None, "raw": None}


@pytest.fixture
def run(public_data: Path, tmp_path: Path) -> Path:
    """A curated run: 10 kept, 2 not selected, 4 dedup rejects (one a copy of a held-out row), 3
    filter rejects, one export reject and one ingest reject (neither is raw data)."""
    rows = [conversation(r) for r in jsonl(public_data / "sft" / "gsm8k_test.jsonl", 20)]
    kept = [record(i, rows[i]) for i in range(10)]
    run = tmp_path / "run"
    run.mkdir()
    records_frame(kept).write_parquet(run / "kept.parquet")
    write_hf(run / "export" / "hf" / "sft", "sft", kept, ExportConfig(test_size=0.2))
    test_ids = held_out_ids(run)
    copy = next(r for r in kept if r["id"] == test_ids[0])
    rejects = [reject(record(100, copy["messages"]), "dedup")]
    rejects += [reject(record(i, rows[i]), "dedup") for i in range(10, 13)]
    rejects += [reject(record(i, rows[i]), "filters") for i in range(13, 16)]
    rejects += [reject(record(16, rows[16]), "export"), reject(record(17, None), "ingest")]
    rejects += [reject(record(i, rows[i]), "select") for i in (18, 19)]
    rejects_frame(rejects).write_parquet(run / "rejected.parquet")
    return run


def train_ids(run: Path, variant: str) -> list[str]:
    return list(load_from_disk(str(run / "train" / "ablation" / variant / "data" / "export" / "hf" / "sft"))["train"]["id"])


def test_variants_hold_out_the_same_rows_and_differ_in_their_train_rows(run: Path) -> None:
    ablation = Ablation(variants=["curated", "selected", "raw", "random", "minus-filters"], seed=3)
    data = write_variants(run, ablation)
    held = held_out_ids(run)
    assert len(held) == 2
    sizes = {"curated": 10, "selected": 8, "raw": 16, "random": 8, "minus-filters": 13}  # random: as many as selected
    assert {name: d.train_rows for name, d in data.items()} == sizes
    assert data["raw"].held_out_removed == 3  # the two held-out rows and the dedup copy of one
    for name in data:
        sft = load_from_disk(str(run / "train" / "ablation" / name / "data" / "export" / "hf" / "sft"))
        assert sft["test"]["id"] == held
        assert not set(sft["train"]["id"]) & {*held, "r100"}
    assert set(train_ids(run, "raw")) == {f"r{i}" for i in (*range(16), 18, 19)} - set(held)  # no export or ingest reject
    assert set(train_ids(run, "curated")) - set(train_ids(run, "selected")) == {"r18", "r19"}
    assert set(train_ids(run, "random")) <= set(train_ids(run, "raw"))
    digest = data["random"].digest
    assert write_variants(run, ablation)["random"].digest == digest  # seeded: the same sample again
    other = write_variants(run, Ablation(variants=["curated", "random"], seed=4))
    assert other["random"].digest != digest and other["curated"] == data["curated"]


def test_a_stage_without_rejects_or_a_run_without_records_is_named(run: Path) -> None:
    with pytest.raises(TrainingInputError, match=r"minus-pii: .*stage 'pii' \(stages with sft rejects: dedup, filters, select\)"):
        write_variants(run, Ablation(variants=["curated", "minus-pii"]))
    with pytest.raises(TrainingInputError, match=r"minus-select is `curated`"):
        write_variants(run, Ablation(variants=["selected", "minus-select"]))
    (run / "rejected.parquet").unlink()
    with pytest.raises(TrainingInputError, match=r"rejected.parquet not found"):
        write_variants(run, Ablation(variants=["curated", "raw"]))


@pytest.mark.parametrize(
    ("variants", "message"),
    [(["curated"], "at least 2"), (["curated", "best"], "'best': a variant is"), (["raw", "raw"], "listed twice")],
)
def test_ablation_config_errors(variants: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig.model_validate({"ablation": {"variants": variants}})


def test_variants_train_with_the_first_candidates_settings() -> None:
    train = TrainConfig.model_validate(
        {"sft": {"max_steps": 3}, "candidates": [{"name": "a", "sft": {"max_steps": 5}}, {"name": "b"}],
         "ablation": {"variants": ["curated", "raw"]}}
    )
    cfg = train.ablation_config()
    assert cfg.sft.max_steps == 5 and cfg.candidates == [] and cfg.ablation is None


@pytest.mark.slow
def test_two_variants_train_and_are_evaluated_on_the_same_rows(
    tokenizer_dir: Path, public_data: Path, tmp_path: Path, curate_here  # noqa: F811
) -> None:
    base = tiny_model(tmp_path / "tiny-llama", tokenizer_dir)
    rows = [conversation(r) for r in jsonl(public_data / "sft" / "gsm8k_test.jsonl", 12)]
    junk = [rows[0], rows[1], [{"role": "user", "content": rows[2][0]["content"]},
                               {"role": "assistant", "content": "I'm sorry, but I cannot help with that request."}]]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows + junk))
    config = {
        "inputs": [{"path": str(data)}],
        "filters": {"keywords": {"refusals": True}},
        "dedup": {"exact": {}},
        "export": {"test_size": 0.25},
        "train": {
            "base_model": str(base), "method": "sft", "report_to": [], "max_seq_length": 256,
            "sft": {**FAST, "max_steps": 2}, "eval": {"rouge_sample": 2, "max_new_tokens": 8},
            "ablation": {"variants": ["curated", "raw"]},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    done = curate_here("all", str(path), "--out", str(run), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((run / "train" / "ablation" / "summary.json").read_text())
    held = list(load_from_disk(str(run / "export" / "hf" / "sft"))["test"]["id"])
    assert summary["held_out_ids"] == held and len(held) == 3
    assert set(summary["variants"]) == {"curated", "raw"} and summary["reference"] == "curated"
    assert summary["variants"]["raw"]["data"]["train_rows"] > summary["variants"]["curated"]["data"]["train_rows"]
    for name, variant in summary["variants"].items():
        result = variant["result"]
        assert result["stages"]["sft"]["steps"] == 2
        assert result["stages"]["sft"]["train_rows"] == variant["data"]["train_rows"]
        generations = json.loads((run / "train" / "ablation" / name / "generations.json").read_text())
        assert len(generations) == 2 and result["errors"]["tuned"]["answers"] == 2
    losses = {n: v["result"]["base_metrics"]["eval_loss"] for n, v in summary["variants"].items()}
    assert losses["curated"] == pytest.approx(losses["raw"])  # the base model on the same rows
    no_jury = "the reference variant itself" if summary["best"] == "curated" else "no interval to tell it from noise"
    assert no_jury in summary["verdict"]
    report = (run / "report.html").read_text()
    assert 'id="ablation"' in report and summary["verdict"].split(":")[0] in report

    # A rerun trains no variant again: each one's result matches its settings and data.
    results = {name: (run / "train" / "ablation" / name / "result.json").stat().st_mtime_ns for name in summary["variants"]}
    again = curate_here("train", str(path), "--data", str(run))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {name: (run / "train" / "ablation" / name / "result.json").stat().st_mtime_ns for name in results} == results
    assert json.loads((run / "train" / "ablation" / "summary.json").read_text())["variants"] == summary["variants"]
