"""The select stage (curation/select): budgets honoured exactly, deterministic, the diversity
radius kept, every other sft record rejected as not_selected with its closest selected record;
IFD on a tiny Llama against a hand computation; config errors before any work.

Data: real instructions with their answers as Alpaca rows (Self-Instruct's user-oriented tasks,
then GSM8K problems: tests/fixtures) with planted rewordings, and Orca DPO preference pairs that
must pass through untouched.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from curation.core.corpus import Corpus
from curation.core.inputs import load_config
from curation.core.plan import Step, build_plan
from curation.core.preflight import preflight
from curation.core.run import run_pipeline
from curation.core.text import text_view
from curation.dedup.encoders import load_encoder
from curation.dedup.vectors import VECTORS_DIR, VectorStore, encoder_settings
from curation.export.render import render, token_counts
from curation.llm.tokenizer import load_tokenizer
from curation.select import build_select_stage
from curation.select.diversity import Budget, pick
from curation.select.ifd import ifd_scores
from curation.select.score import combined, jury_scores, percentiles
from schemas.bundled import smollm2_tokenizer_dir
from schemas.config import ConfigError, CurateConfig
from schemas.record import meta_json

PREFERENCE = "pref/orca_dpo_pairs_validation_283.jsonl"


def instruction_rows(data: Path) -> list[dict]:
    """452 Alpaca rows: each Self-Instruct task with its first instance, then 200 GSM8K problems."""
    lines = [json.loads(line) for line in (data / "sft" / "selfinstruct_user_oriented_252.jsonl").open()]
    rows = [{"instruction": r["instruction"], "input": r["instances"][0]["input"], "output": r["instances"][0]["output"]}
            for r in lines]
    gsm8k = [json.loads(line) for line in (data / "sft" / "gsm8k_test.jsonl").open()]
    return rows + [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in gsm8k]


def alpaca_rows(data: Path, n: int, twins: int = 0, seed: int = 0) -> list[dict]:
    """The first n instruction rows, then `twins` near-copies of some of them (a word changed at the end)."""
    rows = instruction_rows(data)[:n]
    rng = random.Random(seed)
    copies = [dict(r, output=r["output"] + " Indeed.") for r in rng.sample(rows, twins)]
    return rows + copies


def curate(tmp_path: Path, data_dir: Path, rows: list[dict], select: dict, name: str = "run") -> tuple[dict, Path]:
    """The plan in this process on `rows` (+ the Orca preference pairs); (select's stats, run dir)."""
    data = tmp_path / f"{name}.json"
    data.write_text(json.dumps(rows))
    config = {"inputs": [{"path": str(data)}, {"path": str(data_dir / PREFERENCE)}], "select": select}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / name
    run_pipeline(load_config(path), out, path, in_memory=True)
    stats = json.loads((out / "stats.json").read_text())
    return next(s for s in stats["stages"] if s["stage"] == "select"), out


def outputs(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    kept = pl.read_parquet(out / "kept.parquet")
    rejected = pl.read_parquet(out / "rejected.parquet").filter(pl.col("stage") == "select")
    return kept, rejected


def test_a_record_budget_selects_exactly_n_and_rejects_the_rest_with_their_neighbour(
    tmp_path: Path, public_data: Path
) -> None:
    rows = alpaca_rows(public_data, 300)
    stats, out = curate(tmp_path, public_data, rows, {"budget": {"records": 120}, "diversity": {"radius": 0.95}})
    kept, rejected = outputs(out)
    sft = kept.filter(pl.col("kind") == "sft")
    assert sft.height == stats["selected"] == 120
    assert rejected.height == stats["not_selected"] == 180
    assert set(rejected["reason"]) == {"not_selected"}
    # Preference pairs pass through untouched.
    pairs = sum(1 for line in (public_data / PREFERENCE).read_text().splitlines() if line.strip())
    assert kept.filter(pl.col("kind") == "preference").height == stats["passed_through"] == pairs
    assert set(rejected["kind"]) == {"sft"}
    # Every rejected record names a selected one, with its rank, score and cosine.
    assert set(rejected["duplicate_of"]) <= set(sft["id"])
    ranks = []
    for detail in rejected["detail"]:
        assert detail.startswith("rank ") and ", score " in detail and "closest selected cosine" in detail
        ranks.append(int(detail.split()[1]))
    assert sorted(ranks + [orjson.loads(m)["select"]["rank"] for m in sft["meta"]]) == list(range(1, 301))


def test_selection_is_deterministic_whatever_the_input_order(tmp_path: Path, public_data: Path) -> None:
    rows = alpaca_rows(public_data, 200, twins=20)
    select = {"budget": {"records": 80}, "diversity": {"radius": 0.9}}
    _, first = curate(tmp_path, public_data, rows, select, "first")
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    _, second = curate(tmp_path, public_data, shuffled, select, "second")
    a, b = outputs(first)[0], outputs(second)[0]
    # Ids are content hashes: the same records whichever order they came in.
    assert sorted(a.filter(pl.col("kind") == "sft")["id"]) == sorted(b.filter(pl.col("kind") == "sft")["id"])
    ra, rb = outputs(first)[1].sort("id"), outputs(second)[1].sort("id")
    assert ra.select("id", "detail", "duplicate_of").equals(rb.select("id", "detail", "duplicate_of"))


def test_the_radius_holds_between_selected_records_and_twins_name_their_original(
    tmp_path: Path, public_data: Path
) -> None:
    radius = 0.9
    rows = alpaca_rows(public_data, 200, twins=30)
    # A budget of every record: only the radius leaves some out.
    stats, out = curate(tmp_path, public_data, rows, {"budget": {"records": 230}, "diversity": {"radius": radius}})
    kept, rejected = outputs(out)
    sft = kept.filter(pl.col("kind") == "sft")
    vectors = load_encoder().encode(sft.select(text_view("no_system")).to_series().to_list())
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    assert sims.max() < radius
    # Each twin and its original lie within the radius: exactly one of them is selected, the
    # other rejected for the radius, naming a selected record at least that close.
    answers = {m[-1]["content"] for m in sft["messages"].to_list()}
    for row in rows[200:]:
        assert (row["output"] in answers) != (row["output"].removesuffix(" Indeed.") in answers)
    assert rejected.height == stats["not_selected_by"]["radius"] == stats["short_of_budget"] >= 30
    for detail in rejected["detail"]:
        assert "within the radius" in detail and float(detail.rsplit(" ", 1)[1]) >= radius


def test_a_token_budget_is_never_exceeded_and_counts_as_export_does(tmp_path: Path, public_data: Path) -> None:
    rows = alpaca_rows(public_data, 200)
    for method in ("radius", "mmr"):
        select = {"budget": {"tokens": 9000}, "diversity": {"method": method}, "score": {"length": -1}}
        stats, out = curate(tmp_path, public_data, rows, select, method)
        sft = outputs(out)[0].filter(pl.col("kind") == "sft")
        tokenizer = load_tokenizer()
        counted = sum(token_counts(tokenizer, [render(tokenizer, m) for m in sft["messages"].to_list()]))
        assert counted == stats["tokens_used"] <= 9000
        assert stats["tokens_used"] > 9000 - 200  # the greedy fills it up with what still fits
        assert stats["selected"] == sft.height > 20


def test_mmr_honours_a_record_budget_and_covers_more_topics_than_the_score_alone() -> None:
    # Three tight topics; the best scores all in topic 0.
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8, dtype=np.float32)
    topic = np.repeat([0, 1, 2], 10)
    vectors = centres[topic] + 0.05 * rng.standard_normal((30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    score = np.where(topic == 0, 0.9, 0.5) + 0.01 * rng.random(30)
    order = np.argsort(-score, kind="stable")
    only_score = pick(vectors, score, order, Budget(6, None, None), "none", 0.9, 0.7)
    mmr = pick(vectors, score, order, Budget(6, None, None), "mmr", 0.9, 0.5)
    radius = pick(vectors, score, order, Budget(6, None, None), "radius", 0.9, 0.7)
    assert len(only_score.selected) == len(mmr.selected) == 6
    assert set(topic[only_score.selected]) == {0}
    assert set(topic[mmr.selected]) == {0, 1, 2}
    # Three topics, each tight (cosine > 0.9 within): the radius allows one per topic, no more.
    assert sorted(topic[radius.selected]) == [0, 1, 2]
    assert set(radius.cause[radius.cause != ""]) == {"radius"}


def textbook_mmr(vectors: np.ndarray, score: np.ndarray, order: np.ndarray, n: int, mmr_lambda: float) -> list[int]:
    """MMR as defined: every pick recomputes every open record's value (ties: the better rank)."""
    chosen: list[int] = []
    for _ in range(n):
        close = (vectors @ vectors[chosen].T).max(axis=1).clip(min=0) if chosen else np.zeros(len(score))
        value = (mmr_lambda * score - (1 - mmr_lambda) * close)[order]
        value[np.isin(order, chosen)] = -np.inf
        chosen.append(int(order[value.argmax()]))
    return chosen


@pytest.mark.parametrize(("mmr_lambda", "n"), [(0.3, 60), (0.7, 300), (0.95, 60)])
def test_the_lazy_mmr_picks_what_the_textbook_mmr_picks(mmr_lambda: float, n: int) -> None:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((12, 16)).astype(np.float32)
    vectors = centres[rng.integers(0, 12, 400)] + 0.4 * rng.standard_normal((400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    score = np.round(rng.random(400), 2)  # ties on purpose
    order = np.lexsort((np.arange(400), -score))
    got = pick(vectors, score, order, Budget(n, None, None), "mmr", 0.9, mmr_lambda).selected.tolist()
    assert got == textbook_mmr(vectors, score, order, n, mmr_lambda)  # 300 picks: past a full refresh


def test_scores_are_percentiles_combined_by_weight() -> None:
    unscored = {"score": None, "method": "unscored"}
    metas = [meta_json({"jury": {"score": 4.5, "method": "distilled"}}), meta_json({"jury": unscored}), None]
    assert np.array_equal(jury_scores(pl.DataFrame({"meta": metas})), [4.5, np.nan, np.nan], equal_nan=True)
    assert percentiles(np.array([3.0, 1.0, np.nan, 3.0])).tolist() == pytest.approx([5 / 6, 1 / 3, 0, 5 / 6])
    signals = {"jury": np.array([1.0, 2.0, 3.0]), "length": np.array([30.0, 20.0, 10.0])}
    # length -1: short is better, so both signals agree that the third record is best.
    assert combined(signals, {"jury": 1.0, "length": -1.0}, 3).tolist() == pytest.approx([0, 0.5, 1])
    assert combined(signals, {"jury": 3.0, "length": 1.0}, 3).tolist() == pytest.approx([0.25, 0.5, 0.75])
    assert combined({}, {}, 2).tolist() == [0, 0]


def tiny_llama(out: Path) -> Path:
    """A random 2-layer Llama (hidden 16) with the real SmolLM2 tokenizer and chat template."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_ifd_on_a_tiny_llama_matches_a_token_by_token_computation(tmp_path: Path) -> None:
    model_dir = tiny_llama(tmp_path / "tiny")
    prompts = [
        [{"role": "user", "content": "Name a colour."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3, then explain how."}],
        [{"role": "user", "content": "Say hi."}],
    ]
    answers = ["Blue.", "The sum is 5: two plus three makes five.", "Hi there, nice to meet you!"]
    got = ifd_scores(prompts, answers, model_dir, batch_size=2, max_tokens=512, progress=False)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def mean_loss(context: list[int], answer: list[int]) -> float:
        losses = []
        with torch.no_grad():
            for t in range(len(answer)):
                logits = model(input_ids=torch.tensor([context + answer[:t]])).logits[0, -1]
                losses.append(-torch.log_softmax(logits.double(), -1)[answer[t]].item())
        return sum(losses) / len(losses)

    for k, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        context = tokenizer(render(tokenizer, prompt, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        expected = mean_loss(context, ids) / mean_loss([tokenizer.bos_token_id], ids)
        assert got[k] == pytest.approx(expected, rel=1e-4)


def _config(tmp_path: Path, public: Path, **sections: object) -> Path:
    """A config on a real input file: these tests check the config and the plan, not the data."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"inputs": [{"path": str(public / "sft/gsm8k_test.jsonl")}], **sections}))
    return path


@pytest.mark.parametrize(
    ("select", "sections", "message"),
    [
        ({"budget": {"records": 5}, "score": {"jury": 1}}, {}, "select.score.jury weighs the jury's score: add a `jury:`"),
        ({"budget": {"records": 5}, "score": {"ifd": 1}}, {}, r"select.score.ifd weighs IFD: add `select.ifd: \{\}`"),
        ({"budget": {"records": 5}, "ifd": {}}, {}, "select.ifd computes IFD that no weight uses"),
        ({"budget": {"records": 5, "tokens": 9}}, {}, "select.budget: set exactly one of records and tokens"),
        ({"budget": {}}, {}, "select.budget: set exactly one of records and tokens"),
        ({"budget": {"records": 5}, "diversity": {"radius": 1.5}}, {}, "select.diversity.radius"),
        ({"budget": {"records": 5}, "ifd": {"model": "nowhere"}, "score": {"ifd": 1}}, {}, "select.ifd.model: path not found"),
        ({"budget": {"records": 5}, "score": {"length": 0}}, {}, "every weight is 0"),
    ],
)
def test_config_errors_name_the_field(
    tmp_path: Path, public_data: Path, select: dict, sections: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, public_data, select=select, **sections))


def test_preflight_refuses_an_ifd_model_that_is_not_a_model_directory(tmp_path: Path, public_data: Path) -> None:
    (tmp_path / "notes").mkdir()
    select = {"budget": {"records": 5}, "score": {"ifd": 1}, "ifd": {"model": str(tmp_path / "notes")}}
    with pytest.raises(ConfigError, match="select.ifd.model: .*notes is not a model directory"):
        preflight(load_config(_config(tmp_path, public_data, select=select)))


def test_the_plan_selects_after_preference_and_before_export_and_only_when_configured(
    tmp_path: Path, public_data: Path
) -> None:
    plain = load_config(_config(tmp_path, public_data, export={}))
    assert [s.name for s in build_plan(plain, tmp_path, progress=False)] == ["export"]
    config = load_config(_config(tmp_path, public_data, export={}, select={"budget": {"records": 5}}))
    steps = build_plan(config, tmp_path, progress=False)
    assert [s.name for s in steps] == ["select", "export"]
    assert config.select is not None and config.select.score.weights() == {}  # no jury: id order
    assert steps[0].sections == ("select", "export.tokenizer", "export.chat_template")


CODE = "sft/gpteacher_codegen_instruct.json"


def test_vectors_semantic_dedup_kept_select_what_encoding_selects(tmp_path: Path, public_data: Path) -> None:
    """Semantic dedup hands its vectors on (same encoder and view): select reuses them, the
    vectors are exactly what encoding gives, and the selection equals re-encoding's, or a
    missing store's (which encodes every record)."""
    data = tmp_path / "code.json"
    data.write_text((public_data / CODE).read_text())  # 500 code tasks, many near-duplicates
    select = {"budget": {"records": 150}, "score": {"length": 1}, "diversity": {"radius": 0.8}}
    config = CurateConfig.model_validate({"inputs": [{"path": str(data)}], "dedup": {"semantic": {}}, "select": select})
    out = tmp_path / "run"
    stats = run_pipeline(config, out, progress=False)  # on disk: the store is part of dedup's checkpoint
    figures = next(s.figures for s in stats.stages if s.stage == "select")
    # Records whose dedup text lost a line many records share (`#include <iostream>`, a lone `}`) are
    # encoded again, the rest reused.
    assert 0 < figures.embeddings_reused < figures.candidates
    assert figures.not_selected_by["radius"] > 0  # the vectors decide
    manifest = json.loads((out / ".checkpoints" / "01-dedup_semantic" / "manifest.json").read_text())
    assert f"{VECTORS_DIR}/vectors.f32" in manifest["outputs"]
    candidates = Corpus.open(out / ".checkpoints" / "01-dedup_semantic" / "records", 10_000, tmp_path).collect()
    assert config.select is not None
    d = config.select.diversity
    ids, texts = candidates["id"].to_list(), candidates.select(text_view(d.view)).to_series().to_list()
    store = VectorStore(out / VECTORS_DIR)
    found, stored = store.lookup(encoder_settings(d), ids, texts)
    assert found.sum() == figures.embeddings_reused
    assert np.array_equal(stored, load_encoder(d.model, d.max_seq_length).encode([texts[i] for i in np.flatnonzero(found)]))
    # Another text for the same id is never given the stored vector.
    assert not store.lookup(encoder_settings(d), ids[:1], [texts[0] + " changed"])[0].any()
    kept = pl.read_parquet(out / "kept.parquet")["id"].sort()
    rejected = pl.read_parquet(out / "rejected.parquet").filter(pl.col("stage") == "select")
    for where, reused in ((None, 0), (tmp_path / "absent", 0), (out / VECTORS_DIR, figures.embeddings_reused)):
        stage = build_select_stage(config.select, None, None, None, False, VectorStore(where) if where else None)
        result = stage(candidates)
        assert result.figures.embeddings_reused == reused
        assert result.kept["id"].sort().equals(kept)
        columns = ["id", "detail", "duplicate_of"]
        assert result.rejected.select(columns).sort("id").equals(rejected.select(columns).sort("id"))


def test_the_plan_hands_dedup_vectors_to_select_only_when_both_embed_alike(tmp_path: Path, public_data: Path) -> None:
    def steps(semantic: dict, diversity: dict) -> dict[str, Step]:
        select = {"budget": {"records": 5}, "diversity": diversity}
        config = load_config(_config(tmp_path, public_data, dedup={"semantic": semantic}, select=select))
        return {s.name: s for s in build_plan(config, tmp_path, progress=False)}

    assert steps({}, {})["dedup_semantic"].side_output == VECTORS_DIR
    assert steps({"max_seq_length": 64}, {"max_seq_length": 64})["dedup_semantic"].side_output == VECTORS_DIR
    assert steps({"max_seq_length": 64}, {})["dedup_semantic"].side_output is None
    assert steps({"view": "all"}, {})["dedup_semantic"].side_output is None
    assert steps({}, {"model": "all-MiniLM-L6-v2"})["dedup_semantic"].side_output is None
