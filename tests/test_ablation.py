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

from curation.evaluation.errors import CATEGORIES
from curation.export.ablation import exported_digest, held_out_ids, write_variants
from curation.export.hf import write_hf
from curation.report.ablation import ablation as ablation_table
from schemas.export import ExportConfig
from schemas.record import records_frame, rejects_frame
from schemas.train import Ablation, TrainConfig, TrainingInputError
from schemas.train_result import CandidateResult, Evaluation, Judgement, Seconds, StageResult, VariantData
from training.ablation import paired_bootstrap, summarize_ablation, train_variants
from training.candidates import candidate_result


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



def test_a_variant_on_the_exported_rows_has_the_exported_sets_digest(run: Path) -> None:
    data = write_variants(run, Ablation(variants=["curated", "selected", "raw"]))
    assert data["selected"].digest == exported_digest(run)  # the same rows, taken in the export's order
    assert data["curated"].digest != exported_digest(run) and data["raw"].digest != exported_digest(run)
    exported = list(load_from_disk(str(run / "export" / "hf" / "sft"))["train"]["id"])
    assert train_ids(run, "selected") == exported


def trained(name: str, cfg: TrainConfig, losses: list[float] | None = None, refusals: int = 0) -> CandidateResult:
    """A result as training writes it: `losses` per held-out row, the first `refusals` of 8 answers refusals."""
    loss = sum(losses) / len(losses) if losses else 1.0
    stage = StageResult(stage="sft", steps=1, train_loss=None, eval_loss=loss, tokens_per_second=None, train_rows=8,
                        dropped_rows=0, resumed_from=None, adapter_dir=Path(name, "sft"), merged_dir=None)
    flags = [["refusal"] if i < refusals else [] for i in range(8)]
    counts = {c: refusals * (c == "refusal") for c in CATEGORIES}
    errors = {"categories": list(CATEGORIES), "tuned": {"answers": 8, "counts": counts, "flags": flags}}
    evaluation = Evaluation(metrics={"eval_loss_after": loss}, row_losses=losses)
    return candidate_result(name, cfg, {"sft": stage}, evaluation, Judgement(errors=errors),
                            Seconds(stages=1.0, evaluate=1.0, judge=0.0))


def test_a_variant_reuses_the_training_of_the_same_data_and_settings() -> None:
    train = TrainConfig.model_validate({"method": "sft", "ablation": {"variants": ["selected", "raw", "random"]}})
    variants = {name: VariantData(name=name, train_rows=8, held_out_removed=0, held_out_rows=2, digest=digest)
                for name, digest in (("selected", "exported"), ("raw", "r"), ("random", "r"))}
    calls: list[str] = []

    def train_one(name: str, data: VariantData) -> CandidateResult:
        calls.append(name)
        return trained(name, train.ablation_config())

    candidate = trained("main", train.candidate_configs()["main"])
    results, reused = train_variants(train, variants, ("main", candidate, "exported"), train_one)
    assert calls == ["raw"]  # selected: the candidate's data; random: raw's data (the same digest)
    assert reused == {"selected": "candidate main", "random": "variant raw"}
    assert results["selected"] is candidate and results["random"] is results["raw"]

    other = trained("main", TrainConfig.model_validate({"method": "sft", "seed": 7}))  # other settings: no reuse
    calls.clear()
    assert train_variants(train, variants, ("main", other, "exported"), train_one)[1] == {"random": "variant raw"}
    assert calls == ["selected", "raw"]



REFERENCE_LOSSES = [1.0, 1.3, 0.7, 1.1, 0.9, 1.25, 0.75, 1.0, 1.2, 0.8]


def test_a_paired_bootstrap_separates_a_shift_from_row_noise() -> None:
    shifted = paired_bootstrap([x - 0.1 for x in REFERENCE_LOSSES], REFERENCE_LOSSES, seed=0)
    assert shifted.difference == pytest.approx(-0.1) and shifted.ci95 == pytest.approx([-0.1, -0.1])
    assert not shifted.within_noise and shifted.rows == 10
    # +-0.05 row by row: the mean moves by 0.01, and the interval (resampled rows) spans 0
    varied = [x + (0.05 if i % 2 else -0.07) for i, x in enumerate(REFERENCE_LOSSES)]
    noisy = paired_bootstrap(varied, REFERENCE_LOSSES, seed=0)
    assert noisy.difference == pytest.approx(-0.01) and noisy.ci95[0] < 0 < noisy.ci95[1] and noisy.within_noise
    assert paired_bootstrap(varied, REFERENCE_LOSSES, 0) == noisy  # seeded
    # the interval is of the paired difference: row noise both sides share (rows 0.7 to 1.3) does not widen it
    assert noisy.ci95[1] - noisy.ci95[0] < 0.1


def test_the_verdict_and_table_say_beyond_or_within_noise(tmp_path: Path) -> None:
    train = TrainConfig.model_validate(
        {"method": "sft", "select_by": ["eval_loss"], "ablation": {"variants": ["curated", "selected", "raw"]}}
    )
    cfg = train.ablation_config()
    noise = [0.05 if i % 2 else -0.07 for i in range(10)]
    results = {
        "curated": trained("curated", cfg, REFERENCE_LOSSES, refusals=6),
        "selected": trained("selected", cfg, [x - 0.1 for x in REFERENCE_LOSSES]),
        "raw": trained("raw", cfg, [x + 0.02 + n for x, n in zip(REFERENCE_LOSSES, noise, strict=True)], refusals=5),
    }
    data = {n: VariantData(name=n, train_rows=8, held_out_removed=0, held_out_rows=10, digest=n) for n in results}
    (tmp_path / "train" / "ablation").mkdir(parents=True)
    summary = summarize_ablation(train, tmp_path, data, results, [f"r{i}" for i in range(10)], {"selected": "candidate main"})
    assert summary.best == "selected"
    assert summary.verdict == (
        "selected is best by eval_loss (0.9): eval_loss -0.1 against curated, 95% interval [-0.1, -0.1]"
        " over 10 paired rows excludes 0: a real difference."
    )
    versus = {name: v.versus for name, v in summary.variants.items()}
    assert versus["curated"]["eval_loss"].difference == 0 and versus["curated"]["eval_loss"].within_noise
    assert versus["raw"]["eval_loss"].within_noise and versus["raw"]["refusal"].within_noise  # 5 vs 6 of 8 answers
    assert versus["selected"]["refusal"].difference == pytest.approx(-0.75) and not versus["selected"]["refusal"].within_noise

    rows = {r["name"]: r for r in ablation_table(tmp_path / "train" / "ablation" / "summary.json")["rows"]}
    assert rows["selected"]["reused"] == "candidate main"
    assert rows["raw"]["loss_versus"].within_noise and not rows["selected"]["loss_versus"].within_noise
    assert [c for c, d in rows["selected"]["errors_versus"].items() if not d.within_noise] == ["refusal"]

    # the best within noise of the reference: said so
    closer = [x - 0.01 + n for x, n in zip(REFERENCE_LOSSES, noise, strict=True)]
    close = {"curated": results["curated"], "raw": trained("raw", cfg, closer)}
    train2 = train.model_copy(update={"ablation": train.ablation.model_copy(update={"variants": ["curated", "raw"]})})
    verdict = summarize_ablation(train2, tmp_path, data, close, [], None).verdict
    assert verdict == (
        "raw is best by eval_loss (0.98), but within noise: eval_loss -0.02 against curated,"
        " 95% interval [-0.056, 0.016] over 10 paired rows includes 0."
    )


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
    # curated (no select step) is the exported set: the candidate's training, reused, not trained again
    assert summary["variants"]["curated"]["reused"] == "candidate main" and summary["variants"]["raw"]["reused"] is None
    assert summary["variants"]["curated"]["result"] == json.loads((run / "train" / "result.json").read_text())
    assert sorted(p.name for p in (run / "train" / "ablation" / "curated").iterdir()) == ["data"]
    for name, variant in summary["variants"].items():
        result = variant["result"]
        assert result["stages"]["sft"]["steps"] == 2
        assert result["stages"]["sft"]["train_rows"] == variant["data"]["train_rows"]
        folder = run / "train" if variant["reused"] else run / "train" / "ablation" / name
        generations = json.loads((folder / "generations.json").read_text())
        assert len(generations) == 2 and result["errors"]["tuned"]["answers"] == 2
    losses = {n: v["result"]["base_metrics"]["eval_loss"] for n, v in summary["variants"].items()}
    assert losses["curated"] == pytest.approx(losses["raw"])  # the base model on the same rows
    assert all(len(v["result"]["row_losses"]) == 3 for v in summary["variants"].values())  # per held-out row
    raw_versus = summary["variants"]["raw"]["versus"]
    assert raw_versus["eval_loss"]["rows"] == 3 and raw_versus["refusal"]["rows"] == 2  # paired with curated's
    paired = "the reference variant itself" if summary["best"] == "curated" else "paired rows"
    assert paired in summary["verdict"]
    report = (run / "report.html").read_text()
    assert 'id="ablation"' in report and summary["verdict"].split(":")[0] in report
    assert "same data and settings as candidate main: its training reused" in report

    # A rerun trains no variant again: each one's result matches its settings and data.
    results = {name: (run / "train" / "ablation" / name / "result.json").stat().st_mtime_ns for name in ["raw"]}
    again = curate_here("train", str(path), "--data", str(run))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {name: (run / "train" / "ablation" / name / "result.json").stat().st_mtime_ns for name in results} == results
    assert json.loads((run / "train" / "ablation" / "summary.json").read_text())["variants"] == summary["variants"]
