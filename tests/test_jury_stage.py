"""The LLM stages inside the pipeline: jury, synthesis and preference pairs, against a real
OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_server.py) and real files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import polars as pl
import pytest
import yaml
from openai_server import FakeOpenAI, Reply, echo, prompt_of, rating_reply
from pydantic import ValidationError

from curation.core.inputs import load_config
from curation.core.plan import build_plan
from curation.core.run import run_pipeline
from curation.jury.judge import load_rubric
from curation.llm.endpoint import EndpointModel
from curation.preference.pairwise import PairwiseJudge
from schemas.base import StageFailed
from schemas.config import ConfigError
from schemas.jury import Endpoint, JudgeFailure, JuryVerdict

REPO = Path(__file__).resolve().parents[1]
QUALITY = re.compile(r"quality=(\d)")


def sft_rows(n: int, quality: list[int]) -> list[dict]:
    return [
        {"instruction": f"Question number {i}: explain topic {i * 7919 % 1000}.",
         "output": f"Answer {i} with its own words about topic {i * 7919 % 1000}. quality={quality[i % len(quality)]}"}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def curate(tmp_path: Path, config: dict) -> tuple[dict, Path]:
    """The whole plan in this process, in memory (no Prefect); stats.json as written."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    run_pipeline(load_config(path), out, path, in_memory=True)
    return json.loads((out / "stats.json").read_text()), out


def endpoint(server: FakeOpenAI, model: str, **extra) -> dict:
    """A model section for the test server (the scripted server ignores the rubric text)."""
    return {"endpoint": {"base_url": server.base_url, "model": model, "max_retries": 2, "timeout": 5, **extra}}


def conversation(body: dict) -> str:
    return "\n".join(m["content"] for m in body["messages"])


def quality_of(body: dict) -> int | None:
    found = QUALITY.findall(conversation(body))
    return int(found[-1]) if found else None


# --- jury -------------------------------------------------------------------------------------


def test_jury_survives_a_misbehaving_endpoint_and_loses_nothing(tmp_path: Path, openai_server: FakeOpenAI) -> None:
    rows = sft_rows(12, [5, 4, 1, 3, 2, 5])
    rows[5]["output"] = "Answer 5 (the judge cannot read this one). quality=5"
    rows[7]["output"] = "Answer 7 (the server fails on this one). quality=4"
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    seen: dict[str, int] = {}

    def handler(body: dict) -> Reply:
        text = conversation(body)
        key = body["model"] + str(quality_of(body)) + text[:200]
        seen[key] = seen.get(key, 0) + 1
        if body["model"] == "judge-c" and "cannot read" in text:
            return Reply(text="Hmm, hard to say. It depends on many things.")
        if body["model"] == "judge-c" and "server fails" in text:
            return Reply(status=500)
        if body["model"] == "judge-a" and "Question number 3" in text and seen[key] == 1:
            return Reply(status=429, headers={"retry-after": "0"})
        return rating_reply(body, quality_of(body) or 3)

    openai_server.handler = handler
    config = {
        "inputs": [{"path": str(data)}],
        "jury": {
            "judges": [
                {"name": "a", "rubric": "geval_plain", "model": endpoint(openai_server, "judge-a", json_schema=True)},
                {
                    "name": "b",
                    "rubric": "geval_plain",
                    "model": endpoint(openai_server, "judge-b", json_schema=False, logprobs=True),
                },
                {
                    "name": "c",
                    "rubric": "geval_plain",
                    "model": endpoint(openai_server, "judge-c", json_schema=False, max_retries=1),
                },
            ],
            "min_score": 3,
            "cache_dir": str(tmp_path / "cache"),
        },
    }
    stats, out = curate(tmp_path, config)

    assert stats["invariant"]["holds"] and stats["totals"]["ingested"] == 12
    kept = pl.read_parquet(out / "kept.parquet")
    rejected = pl.read_parquet(out / "rejected.parquet")
    assert kept.height + rejected.height == 12
    assert set(rejected["reason"]) == {"low_jury_score"}
    low = [m for m in rejected["messages"].to_list() if QUALITY.search(m[-1]["content"])]
    assert sorted(int(QUALITY.search(m[-1]["content"]).group(1)) for m in low) == [1, 1, 2, 2]
    assert all("judge" not in d and "a " in d for d in rejected["detail"]), rejected["detail"].to_list()

    metas = {r["id"]: orjson.loads(r["meta"]) for r in kept.iter_rows(named=True)}
    by_answer = {r["messages"][-1]["content"]: metas[r["id"]]["jury"] for r in kept.iter_rows(named=True)}
    unreadable = next(v for k, v in by_answer.items() if "cannot read" in k)
    assert unreadable["judges"]["c"] is None and unreadable["failed"]["c"]["error"] == "unparsable"
    assert "hard to say" in unreadable["failed"]["c"]["raw"]
    assert unreadable["score"] == pytest.approx(5, abs=0.5)  # the other two judges still count
    failing = next(v for k, v in by_answer.items() if "server fails" in k)
    assert failing["failed"]["c"]["error"] == "http 500" and failing["judges"]["a"] == 4

    ratings = pl.read_parquet(out / "jury" / "ratings.parquet")
    assert ratings.height == 36 and set(ratings["judge"]) == {"a", "b", "c"}
    assert set(ratings.filter(pl.col("judge") == "b")["method"]) == {"logprobs"}
    assert set(ratings.filter(pl.col("judge") == "a")["method"]) == {"json"}
    jury = next(s for s in stats["stages"] if s["stage"] == "jury")
    assert jury["unscored"] == 0 and jury["agreement_alpha"] > 0.8
    assert jury["usage"]["c"]["failures"] >= 1

    # A re-run calls the server only for what failed (500s are not cached; answers are).
    before = openai_server.call_count
    curate(tmp_path, config)
    again = openai_server.calls[before:]
    assert again and all(b["model"] == "judge-c" and "server fails" in b["messages"][-1]["content"] for b in again)


def test_a_llama_cpp_style_server_rates_in_json_object_and_failures_past_the_share_stop(
    tmp_path: Path, openai_server: FakeOpenAI
) -> None:
    rows = sft_rows(10, [4])
    rows[3]["output"] = "Answer 3 (the server fails on this one). quality=4"
    data = write_jsonl(tmp_path / "sft.jsonl", rows)

    def llama_cpp(body: dict) -> Reply:  # a 500 validation error for json_schema, as llama-cpp-python answers
        if (body.get("response_format") or {}).get("type") == "json_schema":
            return Reply(status=500, text="1 validation error: Input should be 'text' or 'json_object'")
        if "server fails" in conversation(body):
            return Reply(status=503)
        return Reply(text=json.dumps({"reason": "fine", "score": quality_of(body) or 3}))

    openai_server.handler = llama_cpp
    jury = {"judges": [{"name": "a", "model": endpoint(openai_server, "judge-a", max_retries=0)}], "min_score": 2}
    config = {"inputs": [{"path": str(data)}], "jury": {**jury, "cache_dir": str(tmp_path / "cache")}}
    (tmp_path / "closed").mkdir()
    with pytest.raises(StageFailed, match=r"jury: 1 of 10 \(10%\) failed.* - judge a \(endpoint .* judge-a\): http 503 x1"):
        curate(tmp_path / "closed", config)
    assert {b["response_format"]["type"] for b in openai_server.calls} == {"json_object"}
    asked = openai_server.call_count

    config["jury"]["max_unscored"] = 0.1  # one unscored record in ten is allowed: kept, and counted
    (tmp_path / "open").mkdir()
    stats, out = curate(tmp_path / "open", config)
    jury_stats = next(s for s in stats["stages"] if s["stage"] == "jury")
    assert jury_stats["unscored"] == 1 and pl.read_parquet(out / "kept.parquet").height == 10
    assert openai_server.call_count - asked == 1  # the rerun asked again only for the failed one


def test_budget_stops_the_run_unless_unscored_records_are_allowed(tmp_path: Path, openai_server: FakeOpenAI) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(30, [4]))
    openai_server.handler = lambda body: Reply(**{**rating_reply(body, 4).__dict__, "prompt_tokens": 1000})
    price = {"input_per_million": 1000.0, "output_per_million": 0.0}  # 1 USD per request
    jury = {
        "judges": [
            {"name": "a", "rubric": "geval_plain", "model": endpoint(openai_server, "judge-a", max_concurrency=1, price=price)}
        ],
        "budget_usd": 5,
        "min_score": 2,
    }
    config = {"inputs": [{"path": str(data)}], "jury": {**jury, "cache_dir": str(tmp_path / "cache-1")}}
    # Fail closed: 25 of 30 records would pass the gate unscored.
    with pytest.raises(StageFailed, match=r"jury: 2[45] of 30 \(8\d%\) failed, more than jury.max_unscored = 0.05 allows"
                       r" - judge a \(endpoint .* judge-a\): budget exhausted x2[45]"):
        (tmp_path / "closed").mkdir()
        curate(tmp_path / "closed", config)
    assert not (tmp_path / "closed" / "run" / "kept.parquet").exists()

    # Allowed explicitly: the unscored records are rejected as such, none lost.
    config["jury"] = {**jury, "cache_dir": str(tmp_path / "cache-2"), "max_unscored": 1.0, "unscored": "reject"}
    calls = openai_server.call_count
    (tmp_path / "open").mkdir()
    stats, out = curate(tmp_path / "open", config)
    jury_stats = next(s for s in stats["stages"] if s["stage"] == "jury")
    answered = openai_server.call_count - calls
    assert 5 <= answered <= 6
    assert jury_stats["unscored"] == 30 - answered
    assert jury_stats["removed_by_reason"] == {"unscored": 30 - answered}
    assert pl.read_parquet(out / "kept.parquet").height == answered
    rejected = pl.read_parquet(out / "rejected.parquet")
    assert set(rejected["detail"]) == {"no score: a budget exhausted"}
    errors = pl.read_parquet(out / "jury" / "ratings.parquet")["error"].drop_nulls().unique().to_list()
    assert errors == ["budget exhausted"]
    assert jury_stats["estimated_cost_usd"] > 0


def test_distillation_scores_the_rest_and_reports_agreement(tmp_path: Path, openai_server: FakeOpenAI) -> None:
    rows = [
        {"instruction": f"Tell me about item {i}.",
         "output": ("A careful, correct and complete explanation with examples. " if i % 2 else "no idea lol ")
         + f"quality={5 if i % 2 else 1} item {i}"}
        for i in range(80)
    ]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    openai_server.handler = lambda body: rating_reply(body, quality_of(body) or 3)
    config = {
        "inputs": [{"path": str(data)}],
        "jury": {
            "judges": [{"name": "a", "rubric": "geval_plain", "model": endpoint(openai_server, "judge-a")}],
            "min_score": 3,
            "distill": {"sample": 40, "holdout": 0.25},
            "cache_dir": str(tmp_path / "cache"),
        },
    }
    stats, out = curate(tmp_path, config)
    assert openai_server.call_count == 40
    jury = next(s for s in stats["stages"] if s["stage"] == "jury")
    assert jury["distill"]["spearman"] > 0.8 and jury["distill"]["accuracy_at_min_score"] >= 0.9
    kept = pl.read_parquet(out / "kept.parquet")
    methods = [orjson.loads(m)["jury"]["method"] for m in kept["meta"]]
    assert "distilled" in methods
    assert all("quality=5" in m[-1]["content"] for m in kept["messages"].to_list())


# --- synthesis --------------------------------------------------------------------------------


def test_synthesis_turns_raw_text_into_traceable_pairs_that_meet_the_filters(
    tmp_path: Path, openai_server: FakeOpenAI, public_data: Path
) -> None:
    peps = sorted((public_data / "raw" / "peps").glob("pep-0*.rst"))[:3]
    raw = tmp_path / "raw"
    raw.mkdir()
    for pep in peps:
        (raw / pep.name.replace(".rst", ".txt")).write_text(pep.read_text(encoding="utf-8"))
    calls = {"n": 0}

    def handler(body: dict) -> Reply:
        if "TEXT:" not in prompt_of(body):  # the endpoint's probe
            return echo(body)
        calls["n"] += 1
        chunk = body["messages"][-1]["content"].split("TEXT:", 1)[1]
        words = re.findall(r"[A-Za-z]{6,}", chunk)
        if calls["n"] % 5 == 0:
            return Reply(text="Sorry, here are some thoughts without any JSON.")
        pairs = [
            {
                "instruction": f"What does the document say about {words[0]}?",
                "answer": f"It discusses {words[0]} and {words[1]}.",
            },
            {"instruction": "Write something.", "answer": "As an AI language model, I cannot."},
        ]
        return Reply(text=json.dumps({"pairs": pairs}))

    openai_server.handler = handler
    config = {
        "inputs": [{"path": str(raw)}],
        "synthesis": {
            "generator": endpoint(openai_server, "writer"),
            "chunk_tokens": 256,
            "chunk_overlap": 16,
            "pairs_per_chunk": 2,
            "max_chunks": 12,
        },
        "filters": {"keywords": {"refusals": True}},
        "jury": {
            "judges": [{"name": "a", "rubric": "geval_plain", "model": endpoint(openai_server, "judge-a")}],
            "cache_dir": str(tmp_path / "cache"),
        },
    }
    openai_server.handler = lambda body: handler(body) if body["model"] == "writer" else rating_reply(body, 4)
    stats, out = curate(tmp_path, config)
    synthesis = next(s for s in stats["stages"] if s["stage"] == "synthesis")
    assert synthesis["chunks"] == 12 and synthesis["failed_chunks"] == 2
    assert synthesis["generated"] == 20 and stats["totals"]["generated"] == 20
    assert stats["invariant"]["holds"]
    kept = pl.read_parquet(out / "kept.parquet").filter(pl.col("id").str.starts_with("syn-"))
    rejected = pl.read_parquet(out / "rejected.parquet").filter(pl.col("id").str.starts_with("syn-"))
    assert kept.height == 10 and set(rejected["reason"]) == {"excluded_keyword"}  # the filters saw them
    texts = {p.name.replace(".rst", ".txt"): p.read_text(encoding="utf-8") for p in peps}
    for row in kept.iter_rows(named=True):
        meta = orjson.loads(row["meta"])
        start, end = meta["synthesis"]["span"]
        doc = texts[Path(row["source"].split(":")[0].split("@")[0]).name]
        topic = re.search(r"about (\w+)\?", row["messages"][0]["content"]).group(1)
        assert topic in doc[start:end]  # grounded in the chunk it names
        assert meta["synthesis"]["generator"].endswith("writer") and "jury" in meta
    failures = [json.loads(line) for line in (out / "synthesis" / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 2 and all("without any JSON" in f["raw"] for f in failures)


# --- preference -------------------------------------------------------------------------------


def test_preference_pairs_from_oasst_ranks_and_generated_answers(
    tmp_path: Path, openai_server: FakeOpenAI, public_data: Path
) -> None:
    trees = (public_data / "sft" / "oasst_en_100_tree.jsonl").read_text().splitlines()[:6]
    data = tmp_path / "oasst.jsonl"
    data.write_text("\n".join(trees) + "\n")

    def handler(body: dict) -> Reply:
        if body["model"] == "writer":
            return Reply(text="A short generated answer. quality=2")
        return rating_reply(body, quality_of(body) or 4)

    openai_server.handler = handler
    config = {
        "inputs": [{"path": str(data)}],
        "jury": {
            "judges": [{"name": "a", "rubric": "geval_plain", "model": endpoint(openai_server, "judge-a")}],
            "cache_dir": str(tmp_path / "cache"),
        },
        "preference": {
            "candidates": {"existing": True, "generators": [endpoint(openai_server, "writer")]},
            "ranking": "human_then_jury",
            "min_margin": 1,
        },
    }
    stats, out = curate(tmp_path, config)
    pref = next(s for s in stats["stages"] if s["stage"] == "preference")
    pairs = pl.read_parquet(out / "kept.parquet").filter(pl.col("kind") == "preference")
    assert pairs.height == pref["generated"] > 0 and stats["invariant"]["holds"]
    assert 0 <= pref["chosen_is_longer"] <= 1
    rankings = set()
    for row in pairs.iter_rows(named=True):
        meta = orjson.loads(row["meta"])["preference"]
        rankings.add(meta["ranking"])
        assert row["messages"][-1]["role"] == "user"
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        origins = {c["origin"] for c in meta["candidates"]}
        assert any(o.endswith("writer t=0.7") for o in origins)
        if meta["ranking"] == "human":
            assert meta["chosen"]["human_rank"] < meta["rejected"]["human_rank"]
        else:  # the generated answer scores 2, the data's answers 4
            assert meta["chosen"]["score"] - meta["rejected"]["score"] >= 1
    assert rankings == {"human", "jury"}


ANSWERS = re.compile(r"Answer 1:\n(.*)\n\nAnswer 2:\n(.*)", re.DOTALL)


def test_pairwise_check_keeps_only_pairs_confirmed_in_both_orders(tmp_path: Path, openai_server: FakeOpenAI) -> None:
    """Pointwise, every data answer (quality=4) beats the generated one (quality=2). Compared
    pairwise, the judge is sound on questions 0 and 3, always picks the answer shown first on 1
    and 4 (position bias: a tie), and consistently prefers the worse answer on 2 and 5."""

    def handler(body: dict) -> Reply:
        if body["model"] == "writer":
            return Reply(text="A short generated answer. quality=2")
        text = body["messages"][0]["content"]
        shown = ANSWERS.search(text)
        if shown is None:  # pointwise rating
            return rating_reply(body, quality_of(body) or 3)
        question = int(re.search(r"Question number (\d+)", text).group(1))
        first, second = (int(QUALITY.findall(a)[-1]) for a in shown.groups())
        better_first = first > second
        pick = {0: 1 if better_first else 2, 1: 1, 2: 2 if better_first else 1}[question % 3]
        return rating_reply(body, pick, scale_max=2)

    openai_server.handler = handler
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(6, [4]))
    config = {
        "inputs": [{"path": str(data)}],
        "jury": {
            # Two rubrics on one model: it compares each pair once (both orders), not twice.
            "judges": [
                {"name": "a", "rubric": "helpfulness", "model": endpoint(openai_server, "judge")},
                {"name": "b", "rubric": "correctness", "model": endpoint(openai_server, "judge")},
            ],
            "cache_dir": str(tmp_path / "cache"),
        },
        "preference": {
            "candidates": {"existing": True, "generators": [endpoint(openai_server, "writer")]},
            "ranking": "jury",
            "pairwise": {},
        },
    }
    stats, out = curate(tmp_path, config)
    pref = next(s for s in stats["stages"] if s["stage"] == "preference")
    assert pref["pairwise"] == {
        "compared": 6,
        "confirmed": 2,
        "pairwise_tie": 2,
        "pairwise_disagrees": 2,
        "comparisons": 6,
        "order_consistent": pytest.approx(4 / 6),
        "first_shown_wins": pytest.approx(8 / 12),  # sound/contrary: 1 of 2 orders; biased: 2 of 2
    }
    assert pref["no_pair_by_reason"] == {"pairwise_tie": 2, "pairwise_disagrees": 2}
    comparisons = [b for b in openai_server.calls if ANSWERS.search(b["messages"][0]["content"])]
    assert len(comparisons) == 12  # 6 pairs x 2 orders x 1 distinct model
    pairs = pl.read_parquet(out / "kept.parquet").filter(pl.col("kind") == "preference")
    assert pairs.height == 2 and stats["invariant"]["holds"]
    for row in pairs.iter_rows(named=True):
        assert "quality=4" in row["chosen"][0]["content"]
        check = orjson.loads(row["meta"])["preference"]["pairwise"]
        (verdict,) = check.values()  # one distinct model
        assert verdict["verdict"] == "a" and verdict["chosen_first"] > 0 and verdict["chosen_second"] > 0


def test_a_comparison_rubric_is_not_a_pointwise_rubric(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(1, [3]))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"inputs": [{"path": str(data)}], "jury": {"judges": [{"name": "a", "rubric": "pairwise"}]}}))
    with pytest.raises(ConfigError, match=r"judge a: this rubric compares two answers"):
        build_plan(load_config(path), tmp_path / "run", progress=False)
    pointwise = tmp_path / "one_answer.jinja"
    pointwise.write_text("Which is better? {{ prompt }} {{ answer }}")
    path.write_text(yaml.safe_dump({
        "inputs": [{"path": str(data)}],
        "jury": {"judges": [{"name": "a"}]},
        "preference": {"ranking": "jury", "pairwise": {"rubric": str(pointwise)}},
    }))
    cfg = load_config(path)
    model = EndpointModel(Endpoint(base_url="http://127.0.0.1:9/v1", model="m"))  # never called
    with pytest.raises(ConfigError, match=r"a comparison rubric must show both answers"):
        PairwiseJudge("m", model, load_rubric(cfg.preference.pairwise.rubric))


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"jury": {"judges": [{"name": "a", "rubric": "helpfullness"}]}}, "jury.judges[0].rubric: 'helpfullness' is neither"),
        ({"jury": {"judges": [{"name": "a", "model": {"endpoint": {"base_url": "http://x", "model": "m",
                                                                  "api_key_env": "sk-abc123secret"}}}]}},
         "endpoint.api_key_env: must be the NAME"),
        ({"jury": {"min_score": 7}}, "jury: min_score (7.0) is outside the scale 1..5"),
        ({"jury": {"budget_usd": 3}}, "budget_usd needs a price"),
        ({"preference": {}}, "preference.ranking 'human_then_jury' rates candidates with the jury"),
        ({"preference": {"ranking": "human", "pairwise": {}}}, "preference.pairwise compares answers with the jury's models"),
        ({"jury": {"judges": [{"name": "a"}]}, "preference": {"pairwise": {"rubric": "pairwize"}}},
         "preference.pairwise.rubric: 'pairwize' is neither"),
        ({"jury": {"judges": [{"name": "a", "model": {"local": {"path": "nowhere"}}}]}},
         "jury.judges[0].model.local.path: path not found"),
        ({"synthesis": {"chunk_tokens": 64, "chunk_overlap": 64}}, "chunk_overlap (64) must be below chunk_tokens (64)"),
        ({"jury": {"judges": [{"name": "a", "temprature": 0.2}]}}, "jury.judges[0].temprature: unknown key"),
    ],
)
def test_llm_config_errors_name_the_field(tmp_path: Path, section: dict, expected: str) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(1, [3]))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"inputs": [{"path": str(data)}], **section}))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert expected in str(error.value)
    assert "sk-abc123secret" not in str(error.value)


def test_the_jury_verdict_is_the_one_spelling_of_meta_jury() -> None:
    """The jury stage writes meta.jury through JuryVerdict and preference/select read it back
    through it: the stored JSON stays as it was, a field it did not set is not written, and a
    verdict with an unknown or mistyped field does not read."""
    verdict = JuryVerdict(score=3.5, method="jury")
    verdict.judges, verdict.spread = {"a": 4.0, "b": None}, 0.0
    verdict.failed = {"b": JudgeFailure(error="unparsable", raw="hard to say")}
    meta = verdict.into('{"source_id":"x1"}')
    assert meta == ('{"jury":{"failed":{"b":{"error":"unparsable","raw":"hard to say"}},"judges":{"a":4.0,"b":null},'
                    '"method":"jury","score":3.5,"spread":0.0},"source_id":"x1"}')
    assert JuryVerdict.read(meta) == verdict
    distilled = JuryVerdict(score=None, method="distilled").into(None)
    assert distilled == '{"jury":{"method":"distilled","score":null}}'
    assert JuryVerdict.read('{"source_id":"x1"}') is None and JuryVerdict.read(None) is None
    for drifted in ('{"jury":{"method":"jury","score":3,"judge":{}}}', '{"jury":{"method":"vote","score":3}}',
                    '{"jury":{"method":"jury","score":"high"}}'):
        with pytest.raises(ValidationError):
            JuryVerdict.read(drifted)
