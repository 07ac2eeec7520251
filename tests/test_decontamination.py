"""Benchmark decontamination against the shared GSM8K test set and MT-Bench questions: planted
copies (verbatim, edited, embedded, short turns) are removed and named, same-domain clean records
survive, every row is accounted for, and the index is cached by file hash."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curation.core.inputs import load_config
from curation.core.run import run_pipeline
from curation.decontamination.index import build_index
from curation.report.html import write_report
from schemas.config import ConfigError, CurateConfig, Decontamination

# Math word problems in GSM8K's style that are not in its test set: they must survive.
CLEAN_MATH = [
    "Tom has 12 marbles. He gives 5 to his sister and then buys 9 more at the shop. How many marbles does Tom have now?",
    "A baker makes 48 muffins every morning and sells them for $3 each. If she sells three quarters of them,"
    " how much money does she make in dollars?",
    "Maria reads 15 pages of her book every day. The book has 300 pages. How many days does it take her to"
    " finish the book if she skips reading on Sundays?",
    "A train travels at 60 miles per hour for 3 hours and then at 40 miles per hour for 2 hours. How many"
    " miles does it travel in total?",
]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


@pytest.fixture(scope="module")
def benchmarks(public_data: Path) -> dict[str, Path]:
    return {"gsm8k": public_data / "sft" / "gsm8k_test.jsonl", "mt_bench": public_data / "sft" / "mt_bench_question.jsonl"}


def _config(tmp_path: Path, rows: list[dict], benchmarks: dict[str, Path], **decontamination) -> CurateConfig:
    tmp_path.mkdir(exist_ok=True)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    section = {"benchmarks": [{"path": str(p)} for p in benchmarks.values()], **decontamination}
    return CurateConfig.model_validate({"inputs": [{"path": str(data)}], "decontamination": section})


def test_planted_benchmark_items_are_removed_and_named(tmp_path: Path, benchmarks: dict[str, Path]) -> None:
    gsm8k, mt_bench = _lines(benchmarks["gsm8k"]), _lines(benchmarks["mt_bench"])
    edited = gsm8k[6]["question"].upper().replace(",", " ;").replace(". ", ".\n\n  ")
    changed = gsm8k[9]["question"].split()
    changed[len(changed) // 2] = "purple"  # one word replaced: only the n-grams around it are lost
    planted = {
        "verbatim": {"instruction": gsm8k[5]["question"], "output": "The answer is 3."},
        "edited": {"instruction": edited, "output": "Let me think."},
        "one word changed": {"instruction": " ".join(changed), "output": "Let me think."},
        "embedded": {
            "instruction": "Please help with my homework, explain every step. " + gsm8k[7]["question"] + " Thanks a lot!",
            "output": "Sure.",
        },
        "answer copied": {"instruction": "Solve this for me.", "output": gsm8k[8]["answer"]},
        "mt-bench first turn": {"instruction": mt_bench[3]["turns"][0], "output": "Here it is."},
        "mt-bench short turn": {"instruction": mt_bench[0]["turns"][1], "output": "Again."},
    }
    clean = [{"instruction": q, "output": "Let me work it out."} for q in CLEAN_MATH]
    rows = list(planted.values()) + clean
    stats = run_pipeline(_config(tmp_path, rows, benchmarks), tmp_path / "run")

    rejected = pl.read_parquet(tmp_path / "run" / "rejected.parquet")
    kept = pl.read_parquet(tmp_path / "run" / "kept.parquet")
    assert rejected["reason"].to_list() == ["benchmark_overlap"] * len(planted)
    assert rejected["stage"].unique().to_list() == ["decontamination"]
    assert kept.height == len(clean)  # same-domain problems that are not test items survive
    details = dict(zip(planted, rejected.sort("source")["detail"].to_list(), strict=True))
    item = _id(benchmarks["gsm8k"], 5)
    assert details["verbatim"].startswith(f"gsm8k_test: item {item} ({benchmarks['gsm8k']}:6, user turn 1)")
    assert "(1.00)" in details["edited"]
    assert "in shared 13-grams" in details["one word changed"] and "(1.00)" not in details["one word changed"]
    assert "assistant turn 2" in details["answer copied"]
    assert details["mt-bench first turn"].startswith(f"mt_bench_question: item 84 ({benchmarks['mt_bench']}:4, paragraph 1)")
    assert "all 11 of its words in order" in details["mt-bench short turn"]

    entry = stats.stages[-1]
    assert entry.stage == "decontamination" and entry.removed_by_reason == {"benchmark_overlap": len(planted)}
    figures = entry.model_dump()["benchmarks"]
    assert figures["gsm8k_test"]["benchmark_overlap"] == 5 and figures["mt_bench_question"]["benchmark_overlap"] == 2
    assert figures["gsm8k_test"]["items"] == 200  # the fixture: its first 200 items
    assert stats.invariant.holds and stats.totals.kept + stats.totals.rejected == len(rows)
    matches = pl.read_parquet(tmp_path / "run" / "decontamination" / "matches.parquet")
    assert sorted(matches["id"].to_list()) == sorted(rejected["id"].to_list())
    assert gsm8k[5]["question"] in matches["benchmark_text"].to_list()

    html = write_report(tmp_path / "run").read_text()
    section = html[html.index('id="contamination"') : html.index('id="languages"')]
    assert "gsm8k_test" in section and "mt_bench_question" in section and "benchmark item" in section
    assert str(benchmarks["gsm8k"]) + ":6" in section  # the benchmark item beside the record that holds it
    from curation.report.summary import hygiene_tables

    rows, _ = hygiene_tables(stats)["contamination"]
    assert {r["benchmark"]: r["benchmark_overlap"] for r in rows} == {"gsm8k_test": 5, "mt_bench_question": 2}


def _id(path: Path, line: int) -> str:
    from curation.ingest import ingest
    from schemas.config import InputSpec

    return ingest([InputSpec(path=str(path))], progress=False).records["id"][line]


# Rephrased GSM8K test questions 1 and 2: no 13-gram (and few words in order) left in common.
PARAPHRASES = [
    "Every day, Janet's ducks produce 16 eggs. She has three of them for breakfast each morning and uses four more to"
    " bake muffins for friends. The rest she sells at the farmers' market for $2 apiece. How many dollars does she earn"
    " daily at the market?",
    "To make a robe you need 2 bolts of blue fiber plus half as much white fiber. What is the total number of bolts needed?",
]


def test_paraphrased_items_are_caught_by_the_semantic_check(tmp_path: Path, benchmarks: dict[str, Path]) -> None:
    """The n-gram check misses rephrased test items; the semantic check (the static encoder)
    names them with their cosine, and the same-domain clean problems still survive."""
    bench = tmp_path / "gsm8k_50.jsonl"  # 50 items keep the test fast; the rephrased ones are among them
    bench.write_text("".join(benchmarks["gsm8k"].read_text().splitlines(keepends=True)[:50]))
    rows = [{"instruction": q, "output": "Let me work it out."} for q in PARAPHRASES + CLEAN_MATH]
    ngram_only = run_pipeline(_config(tmp_path / "a", rows, {"gsm8k": bench}), tmp_path / "a" / "run")
    assert ngram_only.stages[-1].removed == 0
    config = _config(tmp_path / "b", rows, {"gsm8k": bench}, semantic={"threshold": 0.85})
    stats = run_pipeline(config, tmp_path / "b" / "run")
    rejected = pl.read_parquet(tmp_path / "b" / "run" / "rejected.parquet").sort("source")
    assert rejected["reason"].to_list() == ["benchmark_paraphrase"] * len(PARAPHRASES)
    assert rejected["detail"][0].startswith(f"gsm8k_50: item {_id(bench, 0)} ({bench}:1, user turn 1): cosine 0.")
    assert stats.stages[-1].model_dump()["benchmarks"]["gsm8k_50"]["benchmark_paraphrase"] == len(PARAPHRASES)
    assert stats.totals.kept == len(CLEAN_MATH)


def test_clean_instruction_data_survives(tmp_path: Path, public_data: Path) -> None:
    """1,836 real records from other sets (code, tasks, conversations, tool calls) share no text
    with the shipped GSM8K slice and MT-Bench, but one code line."""
    names = ("gpteacher_codegen_instruct.json", "selfinstruct_user_oriented_252.jsonl", "oasst_en_100_tree.jsonl",
             "fastchat_dummy_conversation_sharegpt.json", "llamafactory_glaive_toolcall_en_demo.json")
    section = {"benchmarks": [{"path": str(public_data / "sft" / f)} for f in ("gsm8k_test.jsonl", "mt_bench_question.jsonl")]}
    inputs = [{"path": str(public_data / "sft" / name)} for name in names]
    config = CurateConfig.model_validate({"inputs": inputs, "decontamination": section})
    stats = run_pipeline(config, tmp_path / "run")
    assert stats.stages[-1].rows_in == 1836
    # The one record removed answers with a whole line of MT-Bench question 124's code, a common
    # dynamic-programming idiom: a benchmark paragraph under 13 words matches when all its words do.
    rejected = pl.read_parquet(tmp_path / "run" / "rejected.parquet")
    assert rejected["source"].to_list() == [f"{public_data}/sft/gpteacher_codegen_instruct.json#21"]
    assert rejected["detail"][0].startswith("mt_bench_question: item 124 (")
    assert "paragraph 3): all 10 of its words in order" in rejected["detail"][0]


def test_index_is_cached_by_file_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, benchmarks: dict[str, Path]) -> None:
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "bench.jsonl"
    copy.write_text(benchmarks["mt_bench"].read_text())
    cfg = Decontamination(benchmarks=[{"path": str(copy)}])
    first = build_index(cfg)
    assert len(list((tmp_path / "cache" / "decontamination").iterdir())) == 1
    assert build_index(cfg).texts.equals(first.texts)
    copy.write_text(benchmarks["mt_bench"].read_text().replace("Hawaii", "Iceland"))  # new content: a new index
    changed = build_index(cfg)
    assert len(list((tmp_path / "cache" / "decontamination").iterdir())) == 2
    assert any("Iceland" in t for t in changed.texts["text"]) and changed.figures["bench"]["items"] == 80


def test_missing_or_unreadable_benchmark_fails_before_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "hello world"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(f"inputs: [{{path: {data}}}]\ndecontamination: {{benchmarks: [{{path: nope.jsonl}}]}}\n")
    with pytest.raises(ConfigError, match=r"decontamination.benchmarks\[0\].path: no file matches"):
        load_config(config)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"unrelated": 1}\n')
    cfg = Decontamination(benchmarks=[{"path": str(empty)}])
    with pytest.raises(ConfigError, match=r"no benchmark items read"):
        build_index(cfg)
    from flows.cli import main  # `curate validate` / `run` find it before any work: exit 2, one message

    config.write_text(f"inputs: [{{path: {data}}}]\ndecontamination: {{benchmarks: [{{path: {empty}}}]}}\n")
    assert main(["validate", str(config)]) == 2
    assert "decontamination.benchmarks[0].path: no benchmark items read" in capsys.readouterr().err


def test_a_benchmark_takes_columns_like_an_input(tmp_path: Path) -> None:
    """HumanEval's rows (prompt, canonical_solution, test) fit no shape: `columns:` maps them, with
    the inputs' own code, and its solutions are then checked like any benchmark text."""
    solution = (
        "    total = 0\n    for number in numbers:\n        if number % 2 == 0:\n"
        "            total += number * number\n    return total\n"
    )
    prompt = 'def sum_even_squares(numbers):\n    """Return the sum of the squares of the even numbers in the list."""\n'
    human_eval = tmp_path / "HumanEval.jsonl"
    human_eval.write_text(json.dumps({"task_id": "HumanEval/0", "prompt": prompt, "canonical_solution": solution,
                                      "test": "assert sum_even_squares([1, 2, 3, 4]) == 20"}) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text("inputs: [{path: train.jsonl}]\ndecontamination: {benchmarks: [{path: HumanEval.jsonl}]}\n")
    rows = [{"instruction": "Write it.", "output": prompt + solution}, {"instruction": "Say hi.", "output": "Hello there!"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"benchmarks\[0\].path: no benchmark items read .*unknown_shape"):
        build_index(load_config(config).decontamination)
    config.write_text("inputs: [{path: train.jsonl}]\ndecontamination: {benchmarks: [{path: HumanEval.jsonl,"
                      " columns: {prompt: prompt, response: canonical_solution}}]}\n")
    cfg = load_config(config)
    index = build_index(cfg.decontamination)
    assert index.figures["HumanEval"]["items"] == 1
    assert index.texts["part"].to_list() == ["user turn 1", "assistant turn 2"]
    run_pipeline(cfg, tmp_path / "run")
    rejected = pl.read_parquet(tmp_path / "run" / "rejected.parquet")
    assert rejected.select("reason").rows() == [("benchmark_overlap",)]
    assert "HumanEval: item " in rejected["detail"][0]
