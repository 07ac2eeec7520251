"""Defaults made for instruction data, on real Self-Instruct tasks as Alpaca rows: semantic dedup embeds whole texts
without system prompts and shared preambles, and keeps sibling answers to one prompt from
different files when preference pairs are built, which `ranking: source` turns into pairs."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curation.core.corpus import CorpusWriter
from curation.core.run import run_pipeline
from curation.dedup import build_semantic_stage
from curation.ingest import ingest
from schemas.config import CurateConfig, InputSpec, SemanticDedup
from schemas.record import RECORD_SCHEMA

PREAMBLE = [
    "You are an assistant with access to these tools. Call a tool with a JSON object on one line.",
    '{"name": "search_web", "description": "Search the web for a query and return the top results"}',
    '{"name": "get_weather", "description": "Return the current weather for a city and a date"}',
    '{"name": "calculator", "description": "Evaluate an arithmetic expression and return the value"}',
    '{"name": "translate", "description": "Translate a text into another language of the caller"}',
    "Think step by step, answer in the language of the question and never invent tool results.",
]


@pytest.fixture(scope="module")
def alpaca(public_data: Path) -> list[dict]:
    """The 28 real Self-Instruct tasks whose first instance has no input and a short answer, as Alpaca rows."""
    lines = (public_data / "sft/selfinstruct_user_oriented_252.jsonl").read_text().splitlines()
    rows = [{"instruction": task["instruction"], **task["instances"][0]} for task in map(json.loads, lines)]
    return [r for r in rows if not r["input"] and len(r["output"].split()) < 60]


def test_a_shared_preamble_and_system_prompt_do_not_make_duplicates(tmp_path: Path, alpaca: list[dict]) -> None:
    preamble = "\n".join(PREAMBLE)
    rows = [{"system": "You are a helpful assistant. " * 20, "instruction": preamble + "\n" + r["instruction"],
             "output": r["output"]} for r in alpaca]
    rows.append(dict(rows[0]))  # one real duplicate, preamble and all
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(rows))
    records = ingest([InputSpec(path=str(path))], progress=False).records
    default = build_semantic_stage(SemanticDedup(), progress=False)(records)
    assert default.rejected["duplicate_of"].to_list() == [records["id"][0]]
    assert default.figures.shared_lines_left_out == len(PREAMBLE)
    # In shards of 8 records the shared lines, and so the decisions, are the same.
    writer = CorpusWriter(tmp_path / "corpus", 8, tmp_path / "scratch", RECORD_SCHEMA)
    writer.write(records)
    sharded = build_semantic_stage(SemanticDedup(), progress=False)(writer.close())
    assert sharded.rejected.collect()["id"].to_list() == default.rejected["id"].to_list()
    assert sharded.figures.shared_lines_left_out == len(PREAMBLE)
    # As before: the system prompt, the preamble and a 128-token prefix dominate every embedding.
    old = build_semantic_stage(SemanticDedup(view="all", shared_lines=None, max_seq_length=128), progress=False)(records)
    assert old.rejected.height > 20


def test_sibling_answers_from_two_files_become_source_ranked_pairs(tmp_path: Path, alpaca: list[dict]) -> None:
    strong = [{"instruction": r["instruction"], "output": r["output"], "generator": "gpt4"} for r in alpaca]
    # The weaker model's answers: the first sentence of the same answer (near duplicates).
    weak = [{"instruction": r["instruction"], "output": r["output"].split(". ")[0] + ".", "generator": "alpaca7b"}
            for r in alpaca]
    (tmp_path / "outputs_gpt4.json").write_text(json.dumps(strong))
    (tmp_path / "outputs_alpaca7b.json").write_text(json.dumps(weak))
    inputs = [{"path": str(tmp_path / "outputs_alpaca7b.json")}, {"path": str(tmp_path / "outputs_gpt4.json")}]
    dedup = {"semantic": {"threshold": 0.8}}
    without = run_pipeline(CurateConfig(inputs=inputs, dedup=dedup), tmp_path / "plain", in_memory=True)
    removed = without.stage("dedup_semantic").removed
    assert removed > 10  # siblings look like duplicates to dedup alone

    preference = {"ranking": "source", "source_order": ["outputs_gpt4.json", "outputs_alpaca7b.json"]}
    stats = run_pipeline(CurateConfig(inputs=inputs, dedup=dedup, preference=preference), tmp_path / "run", in_memory=True)
    semantic = stats.stage("dedup_semantic")
    assert semantic.removed == 0 and semantic.figures.siblings_protected == removed
    pref = stats.stage("preference")
    assert pref.figures.generated == len(alpaca) and pref.figures.no_pair_by_reason == {}
    # Streamed in shards of 16 records, the run decides the same (shared lines, siblings, pairs).
    execution = {"batch_size": 16}
    config = CurateConfig(inputs=inputs, dedup=dedup, preference=preference, execution=execution)
    streamed = run_pipeline(config, tmp_path / "streamed")
    assert [(s.stage, s.out) for s in streamed.stages] == [(s.stage, s.out) for s in stats.stages]
    kept = pl.read_parquet(tmp_path / "run" / "kept.parquet")
    assert pl.read_parquet(tmp_path / "streamed" / "kept.parquet")["id"].to_list() == kept["id"].to_list()
    pairs = kept.filter(pl.col("kind") == "preference")
    by_prompt = {r["instruction"]: r["output"] for r in strong}
    for messages, chosen, meta in pairs.select("messages", "chosen", "meta").iter_rows():
        assert chosen[0]["content"] == by_prompt[messages[0]["content"]]  # the earlier file's answer wins
        assert json.loads(meta)["preference"]["chosen"]["source_rank"] == 0


def test_source_ranking_needs_an_order() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="source_order"):
        CurateConfig(inputs=[{"path": "x.json"}], preference={"ranking": "source"})
