"""Validation: real Great Expectations suites on small run directories, Data Docs and summary.json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from curation.report.validate import (
    DOCS_INDEX,
    ValidationFailed,
    enforce,
    suite_frame,
    suite_spec,
    validate_run,
)
from schemas.record import meta_json, records_frame
from schemas.validation import ValidationConfig

BETWEEN, UNIQUE, IN_SET = (
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_unique",
    "expect_column_values_to_be_in_set",
)


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def sft(rid: str, messages: list[dict[str, str]], score: float | None = None) -> dict[str, Any]:
    meta = {"jury": {"score": score, "method": "jury"}} if score is not None else {}
    return {"id": rid, "source": f"data/chat.jsonl:{rid}", "kind": "sft", "text": None,
            "messages": messages, "chosen": None, "rejected": None, "meta": meta_json(meta)}


def pair(rid: str, prompt: list[dict[str, str]], chosen: str, rejected: str, scores: tuple | None = None) -> dict:
    meta = {"preference": {"chosen": {"score": scores[0]}, "rejected": {"score": scores[1]}}} if scores else {}
    return {"id": rid, "source": f"preference:{rid}", "kind": "preference", "text": None, "messages": prompt,
            "chosen": turns(("assistant", chosen)), "rejected": turns(("assistant", rejected)), "meta": meta_json(meta)}


CLEAN_SFT = [
    sft("s1", turns(("system", "You answer briefly."), ("user", "What is the capital of France?"),
                    ("assistant", "Paris is the capital of France.")), score=4.0),
    sft("s2", turns(("user", "Name a prime number."), ("assistant", "Seven."), ("user", "Another one?"),
                    ("assistant", "Eleven is prime as well.")), score=2.5),
    sft("s3", turns(("user", "What is the weather in Oslo?"), ("assistant", "get_weather(city='Oslo')"),
                    ("tool", "{\"temp_c\": 4}"), ("assistant", "It is 4 degrees Celsius in Oslo."))),
]
CLEAN_PREFERENCE = [
    pair("p1", turns(("user", "Explain recursion in one sentence.")),
         "Recursion is when a function solves a problem by calling itself on smaller parts of it.",
         "Recursion is recursion.", scores=(5, 2)),
    pair("p2", turns(("system", "Be precise."), ("user", "What is 2 + 2?"), ("assistant", "4."),
                     ("user", "And times 3?")), "12.", "Maybe 10, roughly."),
]
BROKEN_SFT = [
    sft("s1", turns(("user", "Say hello in Spanish."), ("assistant", "Hola."))),  # the id of an earlier record
    sft("bad-roles", turns(("user", "Translate 'cat'."), ("user", "Into German."), ("assistant", "Katze."))),
    sft("bad-score", turns(("user", "Is water wet?"), ("assistant", "It makes things wet.")), score=7.0),
    sft("bad-empty", turns(("user", "Write a haiku about rain."), ("assistant", ""))),
]
# p1 again with other case and spacing: an exact duplicate once normalised.
DUPLICATE_PAIR = pair("p1-copy", turns(("user", "explain recursion in  one sentence.")),
                      "Recursion is when a function solves a problem by calling itself on smaller parts of it.",
                      "Recursion is  recursion.")
SFT_FAILURES = {(UNIQUE, "id"), (IN_SET, "roles_alternate"), (BETWEEN, "jury_score"), (BETWEEN, "answer_min_words")}


def run_dir(tmp_path_factory: pytest.TempPathFactory, name: str, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path_factory.mktemp(name)
    records_frame(rows).write_parquet(path / "kept.parquet")
    return path


def config(sft: str = "fail", preference: str = "fail", **bounds: Any) -> ValidationConfig:
    suites = {"sft": {"severity": sft}, "preference": {"severity": preference}}
    return ValidationConfig.model_validate({"suites": suites, **bounds})


def failures(summary: dict, name: str) -> set[tuple[str, str | None]]:
    (suite,) = [s for s in summary["suites"] if s["name"] == name]
    return {(f["expectation"], f["column"]) for f in suite["failed"]}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = run_dir(tmp_path_factory, "clean", CLEAN_SFT + CLEAN_PREFERENCE)
    return path, validate_run(path, config())


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = run_dir(tmp_path_factory, "broken", CLEAN_SFT + BROKEN_SFT + CLEAN_PREFERENCE + [DUPLICATE_PAIR])
    return path, validate_run(path, config(sft="fail", preference="warn"))


def test_clean_run_passes(clean: tuple[Path, dict]) -> None:
    path, summary = clean
    assert [s["name"] for s in summary["suites"]] == ["sft", "preference"]
    for suite in summary["suites"]:
        assert suite == {"name": suite["name"], "severity": "fail", "success": True,
                         "expectations": suite["expectations"], "failed": [], "data_docs": DOCS_INDEX}
    assert [s["expectations"] for s in summary["suites"]] == [8, 11]  # every expectation of the files
    assert json.loads((path / "validation" / "summary.json").read_text()) == summary
    enforce(summary)


def test_data_docs_open_offline(clean: tuple[Path, dict]) -> None:
    docs = clean[0] / "validation" / "data_docs"
    index = (clean[0] / DOCS_INDEX).read_text(encoding="utf-8")
    # GX's own index tables need scripts from CDNs; the plain list links every page without them.
    links = re.findall(r'href="((?:validations|expectations)/[^"]+)"', index.split("</section>")[0])
    assert {link.split("/")[0] for link in links} == {"validations", "expectations"}
    assert len(links) == 4 and all((docs / link).is_file() for link in links)
    assert "sft</a>: passed (8 of 8 expectations met)" in index


def test_broken_run_names_exactly_the_failed_expectations(broken: tuple[Path, dict]) -> None:
    _, summary = broken
    assert failures(summary, "sft") == SFT_FAILURES
    assert failures(summary, "preference") == {(UNIQUE, "text_hash")}
    details = {f["column"]: f["details"] for f in summary["suites"][0]["failed"]}
    assert details["id"] == "2 of 7 rows; ids s1, s1"
    assert details["roles_alternate"] == "1 of 7 rows; ids bad-roles; values False"
    assert details["jury_score"] == "1 of 7 rows (4 without a value, not checked); ids bad-score; values 7.0"
    assert details["answer_min_words"] == "1 of 7 rows; ids bad-empty; values 0"


def test_fail_severity_raises_naming_suite_and_expectations(broken: tuple[Path, dict]) -> None:
    with pytest.raises(ValidationFailed) as raised:
        enforce(broken[1])
    message = str(raised.value)
    assert "suite sft: 4 of 8 expectations failed" in message
    for expectation, column in SFT_FAILURES:
        assert f"{column}: {expectation}" in message
    assert "preference" not in message and "text_hash" not in message  # warn: recorded only
    assert [s["name"] for s in raised.value.suites] == ["sft"]


def test_warn_severity_records_without_raising(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = run_dir(tmp_path_factory, "warn", CLEAN_SFT + BROKEN_SFT)
    summary = validate_run(path, config(sft="warn", preference="warn"))
    assert failures(summary, "sft") == SFT_FAILURES
    assert json.loads((path / "validation" / "summary.json").read_text())["suites"][0]["success"] is False
    enforce(summary)
    # No preference records: that suite is skipped, and says so.
    assert summary["suites"][1] == {"name": "preference", "severity": "warn", "success": True, "expectations": 0,
                                    "failed": [], "data_docs": DOCS_INDEX, "note": "no preference records: suite skipped"}
    assert (path / DOCS_INDEX).is_file()


def test_unset_bounds_leave_their_expectations_out() -> None:
    cfg = config(min_words=None, score_range=None)
    kept = {(e["type"], e["kwargs"]["column"]) for e in suite_spec("sft", cfg)["expectations"]}
    assert (BETWEEN, "answer_max_chars") in kept
    assert not {(BETWEEN, "answer_min_words"), (BETWEEN, "jury_score")} & kept
    assert len(suite_spec("preference", config())["expectations"]) == 11


def test_derived_columns() -> None:
    records = records_frame(CLEAN_SFT + BROKEN_SFT + CLEAN_PREFERENCE + [DUPLICATE_PAIR])
    frame = suite_frame(records, "sft")
    assert frame["roles_alternate"].to_list() == [True, True, True, True, False, True, True]  # tool after answer ok
    assert frame["answer_min_words"].to_list()[:3] == [6, 1, 1]  # the shortest answer of each conversation
    prefs = suite_frame(records, "preference")
    assert prefs["text_hash"][0] == prefs["text_hash"][2] != prefs["text_hash"][1]
    assert prefs["chosen_score"].to_list() == [5.0, None, None]
    assert prefs["prompt"][0] == "user: Explain recursion in one sentence."


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ({"suites": {"raw": {"severity": "fail"}}}, "suites.raw"),
        ({"suites": {"sft": {"severity": "stop"}}}, "severity"),
        ({"suites": {}}, "at least 1"),
        ({"score_range": [5, 1]}, "lower bound"),
        ({"max_char": 10}, "max_char"),
    ],
)
def test_config_errors(section: dict, error: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(error)):
        ValidationConfig.model_validate(section)


# --- `curate validate` on a config and its inputs ------------------------------------------------


def _validate(config: Path, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from flows.cli import main

    code = main(["validate", str(config)])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out, out.err


def test_validate_applies_max_ingest_rejected_to_its_sample(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{"instruction": "Name a colour.", "output": "Blue."}] + [{"foo": i} for i in range(9)]
    (tmp_path / "odd.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "c.yaml"
    config.write_text("inputs: [{path: odd.jsonl}]\n")
    code, out, err = _validate(config, capsys)
    assert code == 4 and "valid" not in out  # the run's exit code for this, found before any work
    assert err == (
        "curate: stopped: ingest rejected more than 50% of an input file (execution.max_ingest_rejected);"
        " check its format:, shape: or columns: (curate validate shows what was detected):\n"
        "  odd.jsonl (jsonl, ascii, alpaca): 9 of 10 rejected (missing_fields 9)\n"
    )
    config.write_text("inputs: [{path: odd.jsonl}]\nexecution: {max_ingest_rejected: 1}\n")
    code, out, _ = _validate(config, capsys)
    assert code == 0 and "  odd.jsonl (jsonl, ascii): alpaca, 10 rows read, 1 records, 9 rejected" in out


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "cp1252"])
def test_validate_reads_a_config_in_any_text_encoding(tmp_path: Path, capsys: pytest.CaptureFixture, encoding: str) -> None:
    (tmp_path / "café.jsonl").write_text('{"text": "Un café, s\'il vous plaît."}\n')
    config = tmp_path / "c.yaml"
    config.write_bytes("# Données d'entrée\ninputs: [{path: café.jsonl}]\n".encode(encoding))
    code, out, _ = _validate(config, capsys)
    assert code == 0 and "café.jsonl (jsonl, utf-8): text, 1 rows read, 1 records" in out


def test_validate_names_the_line_a_config_cannot_decode(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes("inputs:\n  - path: a.jsonl\n".encode("utf-16") + b"\x00\xd8" + "\n".encode("utf-16-le"))
    code, _, err = _validate(config, capsys)
    assert code == 2 and err == f"curate: error: {config}: line 3 is not valid utf-16 (illegal UTF-16 surrogate)\n"
