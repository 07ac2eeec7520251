"""Ingest: real public files of every shape, every table format, and every kind of bad input."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from curation.core.inputs import expand_input
from curation.ingest import IngestResult, check_inputs, detect_format, ingest
from schemas.config import ConfigError, InputSpec
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA


def run(path: Path | str, **spec: Any) -> IngestResult:
    result = ingest([InputSpec(path=str(path), **spec)], progress=False)
    assert result.records.schema == pl.Schema(RECORD_SCHEMA)
    assert result.rejected.schema == pl.Schema(REJECT_SCHEMA)
    assert result.records["id"].is_unique().all()
    assert result.rejected["source"].null_count() == 0
    assert (result.rejected["stage"] == "ingest").all()
    return result


def metas(result: IngestResult) -> list[dict]:
    return [json.loads(m) for m in result.records["meta"]]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def one(rows: list[dict], tmp_path: Path, **spec: Any) -> IngestResult:
    return run(write_jsonl(tmp_path / "rows.jsonl", rows), **spec)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def turn(who: str, text: str) -> dict:
    return {"from": who, "value": text}


# --- formats and config errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.NDJSON", "jsonl"),
        ("a.json", "json"),
        ("a.parquet", "parquet"),
        ("a.csv", "csv"),
        ("a.txt", "txt"),
        ("a.md", "txt"),
        ("a.rst", "txt"),
    ],
)
def test_detect_format_from_extension(name: str, fmt: str) -> None:
    assert detect_format(Path(name)) == fmt


def test_unknown_extension_is_a_config_error(tmp_path: Path) -> None:
    good, odd = tmp_path / "a.jsonl", tmp_path / "notes.xlsx"
    good.write_text("")
    odd.write_text("")
    with pytest.raises(ConfigError, match=r"notes\.xlsx.*set `format:`"):
        detect_format(odd)
    with pytest.raises(ConfigError, match=r"^inputs\[1\]: .*notes\.xlsx.*`format:`"):
        check_inputs([InputSpec(path=str(good)), InputSpec(path=str(tmp_path / "*.xlsx"))])
    with pytest.raises(ConfigError, match=r"^inputs\[0\]: no file matches"):
        ingest([InputSpec(path=str(tmp_path / "missing*.jsonl"))], progress=False)
    check_inputs([InputSpec(path=str(odd), format="txt")])  # an explicit format is trusted


def test_a_file_that_cannot_be_read_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "a_bad.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")  # fails when read
    (tmp_path / "b_ok.jsonl").write_text('{"text": "fine"}\n')
    result = ingest([InputSpec(path=str(tmp_path / "*.jsonl*"))], progress=False)
    assert result.rejected.select("source", "reason").rows() == [
        (str(tmp_path / "a_bad.jsonl.gz"), "unreadable_file")
    ]
    assert result.records["text"].to_list() == ["fine"]


@pytest.mark.parametrize("odd", ["pipe.jsonl", "loop_a.jsonl", "gone.jsonl"])
@pytest.mark.parametrize("named_by", ["folder", "glob"])
def test_what_is_not_a_regular_file_is_refused_before_any_work(tmp_path: Path, odd: str, named_by: str) -> None:
    """Found in a folder or by a glob, a FIFO (opening it would block forever), a symlink loop or
    a broken symlink stops the run before any work: skipping it would curate part of the data."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "ok.jsonl").write_text('{"text": "fine"}\n')
    os.mkfifo(folder / "notes")  # not named as data: skipped and listed, never opened
    (folder / "up").symlink_to(tmp_path)  # a folder link: not followed, no loop
    if odd == "pipe.jsonl":
        os.mkfifo(folder / odd)
    elif odd == "loop_a.jsonl":
        (folder / odd).symlink_to(folder / "loop_b.jsonl")
        (folder / "loop_b.jsonl").symlink_to(folder / odd)
    else:
        (folder / odd).symlink_to(tmp_path / "deleted.jsonl")
    what = {"pipe.jsonl": "a FIFO", "loop_a.jsonl": "a symlink loop", "gone.jsonl": "a broken symlink"}[odd]
    spec = InputSpec(path=str(folder if named_by == "folder" else folder / "*.jsonl"))
    message = rf"^inputs\[0\]: {re.escape(str(folder / odd))} is {what}: only regular files"
    with pytest.raises(ConfigError, match=message):
        check_inputs([spec])
    with pytest.raises(ConfigError, match=message):
        ingest([spec], progress=False)
    (folder / odd).unlink()
    (folder / "loop_b.jsonl").unlink(missing_ok=True)
    result = run(spec.path)
    assert result.records["text"].to_list() == ["fine"] and result.rejected.height == 0
    assert result.skipped == ([str(folder / "notes")] if named_by == "folder" else [])


@pytest.mark.parametrize("named", ["/dev/zero", "fifo"])
def test_an_input_that_is_not_a_regular_file_is_a_config_error(tmp_path: Path, named: str) -> None:
    if named == "fifo":
        named = str(tmp_path / "pipe.jsonl")
        os.mkfifo(named)
    with pytest.raises(ConfigError, match=r"inputs\[0\]: .* is a (device|FIFO): only regular files"):
        check_inputs([InputSpec(path=named, format="jsonl")])


def test_hostile_rows_are_rejected_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("curation.ingest.readers.MAX_LINE_BYTES", 1000)
    deep = "[" * 300 + "]" * 300  # orjson reads 1024 levels but writes only 254
    lines = [
        json.dumps({"instruction": "Say hi", "output": "Hi\u0000 there\u0007!\tok"}),
        '{"instruction": "a", "output": "b", "extra": ' + deep + "}",
        json.dumps({"instruction": "long", "output": "x" * 5000}),
        json.dumps({"instruction": "next", "output": "after the long line"}),
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")

    result = run(path)

    assert result.rejected.select("source", "reason").rows() == [
        (f"{path}:2", "too_deep"),
        (f"{path}:3", "line_too_long"),
    ]
    assert result.records["messages"].to_list()[-1][1]["content"] == "after the long line"
    first = result.records.row(0, named=True)
    assert first["messages"][1]["content"] == "Hi there!\tok"  # NUL and BEL removed, the tab kept
    assert json.loads(first["meta"])["control_chars_removed"] == 2
    assert result.stats().figures.control_chars_removed == 1


# --- real data ----------------------------------------------------------------------------


REAL_FILE_FIELDS = ("name", "shape", "kind", "kept", "rejected")


def check_real_file(root: Path, name: str, shape: str, kind: str, kept: int, rejected: dict) -> None:
    result = run(root / name)
    assert result.records.height == kept
    assert result.stats().removed_by_reason == rejected
    assert result.records.height + result.rejected.height == result.rows_read  # 1 row, 1 outcome
    if kept:
        assert set(result.records["kind"]) == {kind}
        assert {m["shape"] for m in metas(result)} == {shape}
    sources = result.records["source"].to_list() + result.rejected["source"].to_list()
    assert all(s.startswith(str(root / name.split("*")[0])) for s in sources)
    sep = ":" if name.endswith((".jsonl", ".txt", ".rst")) else "#"
    assert all(re.search(rf"{sep}\d+$", s) for s in sources)


@pytest.mark.parametrize(
    REAL_FILE_FIELDS,
    [  # tests/fixtures: whole files or their first records (tests/fixtures/README.md)
        ("sft/gsm8k_test.jsonl", "prompt_response", "sft", 200, {}),
        ("sft/llamafactory_glaive_toolcall_en_demo.json", "sharegpt", "sft", 20, {}),
        ("sft/llamafactory_identity.json", "alpaca", "sft", 91, {}),
        # GPTeacher's instruction/input/response: the dolly shape, `input` as its context.
        ("sft/gpteacher_codegen_instruct.json", "dolly", "sft", 500, {}),
        ("sft/fastchat_dummy_conversation_sharegpt.json", "sharegpt", "sft", 500, {}),
        ("pref/orca_dpo_pairs_validation_283.jsonl", "openai_dpo", "preference", 284, {}),
        ("raw/c4_demo.jsonl", "text", "raw", 300, {}),
        ("raw/wiki_demo.txt", "text", "raw", 1, {}),
        ("raw/peps/*.rst", "text", "raw", 6, {}),
        # One speech is cp1252, not UTF-8: read as such (test_text_encodings).
        ("raw/state_union/*.txt", "text", "raw", 5, {}),
        # Questions without answers: raw text, one paragraph per turn (a benchmark to check against).
        ("sft/mt_bench_question.jsonl", "questions", "raw", 80, {}),
    ],
)
def test_real_file(public_data: Path, name: str, shape: str, kind: str, kept: int, rejected: dict) -> None:
    check_real_file(public_data, name, shape, kind, kept, rejected)


@pytest.mark.parametrize(
    REAL_FILE_FIELDS,
    # ../shared/data: files the repository may not ship. Their shapes are read from shipped files
    # above (Alpaca: identity; ShareGPT preference: test_shape); these check the
    # third-party files themselves, e.g. Code Alpaca's two rows with an empty output.
    [
        ("sft/llamafactory_alpaca_en_demo.json", "alpaca", "sft", 999, {}),
        # Two code_alpaca rows really have an empty output.
        ("sft/code_alpaca_2k.json", "alpaca", "sft", 2015, {"empty_content": 2}),
        ("pref/llamafactory_dpo_en_demo.json", "sharegpt", "preference", 300, {}),
    ],
)
def test_real_file_not_shipped(shared_data: Path, name: str, shape: str, kind: str, kept: int, rejected: dict) -> None:
    check_real_file(shared_data, name, shape, kind, kept, rejected)


def test_real_ids_and_meta(public_data: Path) -> None:
    fastchat = run(public_data / "sft/fastchat_dummy_conversation_sharegpt.json")
    assert fastchat.records["id"][:2].to_list() == ["identity_0", "identity_1"]

    glaive = run(public_data / "sft/llamafactory_glaive_toolcall_en_demo.json")
    tools = [json.loads(m["tools"]) for m in metas(glaive)]  # ShareGPT extras stay in meta
    assert tools[0][0]["name"] == "search_recipes"
    roles = glaive.records["messages"].list.eval(pl.element().struct.field("role")).explode()
    assert set(roles) == {"user", "assistant", "tool"}  # function_call/observation mapped

    gsm8k = run(public_data / "sft/gsm8k_test.jsonl")
    assert metas(gsm8k)[0] == {"shape": "prompt_response"}
    assert gsm8k.records["id"].str.contains(r"^[0-9a-f]{16}$").all()
    assert run(public_data / "sft/gsm8k_test.jsonl").records["id"].equals(gsm8k.records["id"])


def test_real_selfinstruct_one_record_per_instance(public_data: Path) -> None:
    path = public_data / "sft/selfinstruct_user_oriented_252.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    result = run(path)
    assert result.rows_read == 252
    expected = [f"{r['id']}/{k}" for r in rows for k in range(len(r["instances"]))]
    assert result.records["id"].to_list() == expected
    assert metas(result)[0] == {"motivation_app": "Grammarly", "shape": "selfinstruct"}
    first, instance = result.records["messages"][0].to_list(), rows[0]["instances"][0]
    ask = rows[0]["instruction"] + "\n\n" + instance["input"]
    assert first == [user(ask), bot(instance["output"])]


def test_real_orca_dpo_prompt_ends_on_user(public_data: Path) -> None:
    result = run(public_data / "pref/orca_dpo_pairs_validation_283.jsonl")
    assert (result.records["messages"].list.last().struct.field("role") == "user").all()
    assert result.records["messages"].list.first().struct.field("role")[0] == "system"
    for side in ("chosen", "rejected"):
        assert (result.records[side].list.len() == 1).all()


def test_real_oasst_paths(public_data: Path) -> None:
    path = public_data / "sft/oasst_en_100_tree.jsonl"
    trees = [json.loads(line) for line in path.read_text().splitlines()]

    # A conversation ends on each assistant leaf, and once on each assistant reply that has an
    # unanswered prompter leaf below it (the trailing user turn is dropped).
    def ends(node: dict) -> int:
        replies = node["replies"]
        unanswered = any(r["role"] == "prompter" and not r["replies"] for r in replies)
        own = node["role"] == "assistant" and (not replies or unanswered)
        return own + sum(ends(r) for r in replies)

    result = run(path)
    assert result.rows_read == 100
    assert result.rejected.height == 0
    assert result.records.height == sum(ends(t["prompt"]) for t in trees) > 400
    meta = pl.Struct(
        {"tree_id": pl.String, "message_ids": pl.List(pl.String), "ranks": pl.List(pl.Int64)}
    )
    records = result.records.with_columns(pl.col("meta").str.json_decode(meta)).unnest("meta")
    turns = records["messages"].list.len()
    assert (records["id"] == records["message_ids"].list.last()).all()
    assert (records["message_ids"].list.len() == turns).all()
    assert (records["ranks"].list.len() == turns).all()
    assert (records["messages"].list.last().struct.field("role") == "assistant").all()
    assert records["ranks"].list.first().null_count() == records.height  # the root has no rank
    # Sibling replies share the prompt prefix and carry their human ranks: preference material.
    prefix = pl.col("message_ids").list.slice(0, pl.col("message_ids").list.len() - 1)
    siblings = records.group_by(prefix).agg(pl.col("ranks").list.last())
    ranked = siblings.filter(pl.col("ranks").list.len() > 1)
    assert ranked.height > 50
    assert ranked["ranks"].list.contains(0).sum() > 50


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "shape", "expected"),
    [
        (
            {"instruction": "Add", "input": "1+1", "output": "2", "system": "Be brief."},
            "alpaca",
            {"messages": [system("Be brief."), user("Add\n\n1+1"), bot("2")]},
        ),
        (
            {"instruction": "Sum up", "context": "Text.", "response": "Short.", "category": "c"},
            "dolly",
            {"messages": [user("Sum up\n\nText."), bot("Short.")], "meta": {"category": "c"}},
        ),
        (
            {"question": "2+2?", "answer": "4"},
            "prompt_response",
            {"messages": [user("2+2?"), bot("4")]},
        ),
        (
            {"prompt": "Hi", "completion": "Hello"},
            "prompt_response",
            {"messages": [user("Hi"), bot("Hello")]},
        ),
        (
            {"query": "Why?", "response": "Because."},
            "prompt_response",
            {"messages": [user("Why?"), bot("Because.")]},
        ),
        (
            {
                "messages": [
                    system("S"),
                    {"role": "user", "content": [{"type": "text", "text": t} for t in "ab"]},
                    bot("call"),
                    {"role": "function", "content": "42"},
                    bot("It is 42."),
                ]
            },
            "messages",
            {
                "messages": [
                    system("S"),
                    user("a\nb"),
                    bot("call"),
                    {"role": "tool", "content": "42"},
                    bot("It is 42."),
                ]
            },
        ),
        (
            {"id": 7, "system": "Sys", "conversations": [turn("human", "q"), turn("chatgpt", "a")]},
            "sharegpt",
            {"id": "7", "messages": [system("Sys"), user("q"), bot("a")]},
        ),
        (  # ShareGPT preference, as LLaMA-Factory's dpo_en_demo.json writes it
            {"conversations": [turn("human", "q"), turn("gpt", "a"), turn("human", "q2")],
             "chosen": turn("gpt", "good"), "rejected": turn("gpt", "bad")},
            "sharegpt",
            {"kind": "preference", "messages": [user("q"), bot("a"), user("q2")], "chosen": [bot("good")],
             "rejected": [bot("bad")]},
        ),
        (
            {"prompt": "Q", "chosen": "good", "rejected": "bad"},
            "preference",
            {"kind": "preference", "messages": [user("Q")], "chosen": [bot("good")],
             "rejected": [bot("bad")]},
        ),
        (  # TRL explicit conversational form
            {"prompt": [user("Q")], "chosen": [bot("good")], "rejected": [bot("bad")],
             "system": "S"},
            "preference",
            {"kind": "preference", "messages": [system("S"), user("Q")], "chosen": [bot("good")],
             "rejected": [bot("bad")]},
        ),
        (  # TRL implicit form: the shared head of both conversations is the prompt
            {"chosen": [user("Q"), bot("A"), user("Q2"), bot("good")],
             "rejected": [user("Q"), bot("A"), user("Q2"), bot("bad")]},
            "preference",
            {"kind": "preference", "messages": [user("Q"), bot("A"), user("Q2")],
             "chosen": [bot("good")], "rejected": [bot("bad")]},
        ),
        (  # full conversations next to a prompt (UltraFeedback-binarized style)
            {"prompt": "Q", "chosen": [user("Q"), bot("good")],
             "rejected": [user("Q"), bot("bad")]},
            "preference",
            {"kind": "preference", "messages": [user("Q")], "chosen": [bot("good")],
             "rejected": [bot("bad")]},
        ),
        (
            {"question_id": 3, "input": {"messages": [user("Q")]},
             "preferred_output": [bot("good")], "non_preferred_output": [bot("bad")]},
            "openai_dpo",
            {"id": "3", "kind": "preference", "messages": [user("Q")], "chosen": [bot("good")],
             "rejected": [bot("bad")]},
        ),
        (
            {"text": "A document.", "url": "http://x"},
            "text",
            {"kind": "raw", "text": "A document.", "meta": {"url": "http://x"}},
        ),
    ],
)
def test_shape(tmp_path: Path, row: dict, shape: str, expected: dict) -> None:
    result = one([row], tmp_path)
    assert result.rejected.height == 0, result.rejected.to_dicts()
    record = result.records.row(0, named=True)
    assert record["kind"] == expected.get("kind", "sft")
    assert json.loads(record["meta"]) == {**expected.get("meta", {}), "shape": shape}
    for column in ("id", "text", "messages", "chosen", "rejected"):
        if column in expected:
            assert record[column] == expected[column], column
    assert record["source"] == f"{tmp_path / 'rows.jsonl'}:1"


def test_shape_override_and_mixed_rows(tmp_path: Path) -> None:
    # Detected per row: a mixed file is read whole and says so; a row that fits no shape is
    # read as the file's shape, so its reason names what it lacks.
    rows = [{"text": "ok"}, {"instruction": "i", "output": "o"}, {"instruction": "no answer"}]
    auto = one(rows, tmp_path)
    assert auto.records["text"].to_list() == ["ok", None]
    assert auto.records["messages"].to_list()[1] == [user("i"), bot("o")]
    assert auto.rejected.select("reason", "detail").row(0) == ("missing_fields", "text")
    assert auto.files[0].shape == "mixed: text 2, alpaca 1"
    assert "mixed: text 2, alpaca 1, 3 rows read, 2 records, 1 rejected (missing_fields 1)" in auto.files[0].line()
    rows = rows[:2]
    forced = one(rows, tmp_path, shape="alpaca")
    assert forced.records["messages"].to_list() == [[user("i"), bot("o")]]
    assert forced.rejected.select("reason", "detail").row(0) == (
        "missing_fields",
        "instruction, output",
    )


def test_selfinstruct_rejects_a_bad_instance_alone(tmp_path: Path) -> None:
    instances = [{"input": "", "output": "done"}, {"input": "x", "output": ""}]
    result = one([{"id": "t", "instruction": "Do", "instances": instances}], tmp_path)
    assert result.records.select("id", "messages").rows() == [("t/0", [user("Do"), bot("done")])]
    assert result.rejected.select("id", "reason", "detail").rows() == [
        ("t/1", "empty_content", "instances[1].output")
    ]


def test_ids_hash_and_repeat_suffixes(tmp_path: Path) -> None:
    same = {"instruction": "i", "output": "o"}
    other = {"instruction": "j", "output": "p"}
    rows = [{"id": "a", **same}, {"id": "a", **other}, same, same, {"id": "a~2", **same}]
    result = one(rows, tmp_path)
    ids = result.records["id"].to_list()
    digest = ids[2]
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert ids == ["a", "a~2", digest, f"{digest}~2", "a~2~2"]
    assert [m.get("input_id") for m in metas(result)] == [None, "a", None, digest, "a~2"]


def test_one_row_repeated_holds_one_id_entry(tmp_path: Path) -> None:
    import pyarrow as pa

    from curation.ingest.collect import RunIds

    path = tmp_path / "same.jsonl.zst"
    with pa.output_stream(str(path), compression="zstd") as f:
        f.write((json.dumps({"instruction": "i", "output": "o"}) + "\n").encode() * 3000)
    result = ingest([InputSpec(path=str(path))], progress=False, out=tmp_path / "work", batch_size=500)
    ids = result.records.column("id").to_list()
    assert result.rows_read == result.records.height == 3000 and result.rejected.height == 0
    assert ids == [ids[0], *(f"{ids[0]}~{n}" for n in range(2, 3001))]
    # What makes the ids unique stays one entry per input id, not one per row.
    ids = RunIds()
    assert [ids.unique("x") for _ in range(3000)][-1] == "x~3000"
    assert ids.as_is == {"x"} and ids.suffixes == {"x": 3000}
    assert ids.unique("x~3000") == "x~3000~2" and ids.unique("x~3001") == "x~3001"


def test_per_file_ingest_gives_the_ids_of_the_whole_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ray ingest's plan (a task per file, ids made unique run-wide by the driver afterwards),
    here on the local engine: the same records, ids, input ids and rejects as one pass."""
    from curation.core.engine import LocalEngine
    from curation.ingest import parallel
    from curation.ingest.parallel import ingest_on_ray

    qa = {"instruction": "i", "output": "o"}
    first = write_jsonl(tmp_path / "a.jsonl", [{"id": "a", **qa}, {"id": "a", **qa}, {"id": "b", **qa}, "not an object"])
    second = write_jsonl(tmp_path / "b.jsonl", [{"id": "a", **qa}, {"id": "a~2", **qa}, qa, {"id": "c", "instruction": "i"}])
    (tmp_path / "empty.jsonl").write_text("")
    third = write_jsonl(tmp_path / "c.jsonl", [qa, {"id": "b", **qa}, {"id": "a", **qa}])
    inputs = [InputSpec(path=str(p)) for p in (first, second, tmp_path / "empty.jsonl", third)]
    whole = ingest(inputs, progress=False, out=tmp_path / "whole", batch_size=2)
    per_file = ingest_on_ray(inputs, LocalEngine(), tmp_path / "per-file", batch_size=2, base=None)
    records = per_file.records.collect()
    assert records.equals(whole.records.collect()) and per_file.rejected.collect().equals(whole.rejected.collect())
    ids = records["id"].to_list()
    assert ids == ["a", "a~2", "b", "a~3", "a~2~2", ids[5], f"{ids[5]}~2", "b~2", "a~4"]
    assert [json.loads(m).get("input_id") for m in records["meta"]] == [None, "a", None, "a", "a~2", None, ids[5], "b", "a"]
    assert per_file.rejected.height == 2 and per_file.rows_read == whole.rows_read == 11
    assert [f.entry() for f in per_file.files] == [f.entry() for f in whole.files]
    assert not (tmp_path / "per-file" / "files").exists()  # the per-file shards moved into one corpus
    # Tasks that do not see the run's folder (another machine) send their shards back instead.
    monkeypatch.setattr(parallel, "_sees", lambda mark: False)
    shipped = ingest_on_ray(inputs, LocalEngine(), tmp_path / "shipped", batch_size=2, base=None)
    assert shipped.records.collect().equals(records) and shipped.rejected.collect().equals(whole.rejected.collect())


# --- tables, datasets, text -----------------------------------------------------------------


def test_parquet_and_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    frame = pl.DataFrame(
        {"prompt": ["p1", "p2", "p3"], "response": ["r1", None, "r3"], "n": [1, 2, None]}
    )
    frame.write_parquet("t.parquet")
    frame.write_csv("t.csv")
    parquet = run("t.parquet")
    assert parquet.records["source"].to_list() == ["t.parquet#0", "t.parquet#2"]
    assert metas(parquet) == [{"n": 1, "shape": "prompt_response"}, {"shape": "prompt_response"}]
    assert parquet.rejected.select("source", "reason", "detail").row(0) == (
        "t.parquet#1",
        "missing_fields",
        "response|completion",
    )
    csv = run(tmp_path / "t.csv")  # an absolute path below the cwd is still shown relative
    assert csv.records["source"].to_list() == ["t.csv#0", "t.csv#2"]
    assert metas(csv)[0] == {"n": "1", "shape": "prompt_response"}  # CSV columns stay strings
    assert csv.rejected["reason"].to_list() == ["missing_fields"]


def test_hf_save_to_disk(tmp_path: Path) -> None:
    import datasets
    rows = [{"id": f"r{i}", "messages": [user("q"), bot(f"a{i}")], "lang": "en"} for i in range(3)]
    single = datasets.Dataset.from_list(rows)
    single.save_to_disk(str(tmp_path / "single"))
    splits = datasets.DatasetDict({"train": single, "test": single.select([0])})
    splits.save_to_disk(str(tmp_path / "dict"))

    assert detect_format(tmp_path / "dict") == "hf_disk"
    result = run(tmp_path / "single")
    assert result.records["id"].to_list() == ["r0", "r1", "r2"]
    assert metas(result)[0] == {"lang": "en", "shape": "messages"}
    result = run(tmp_path / "dict")
    assert [s.rsplit("/", 1)[1] for s in result.records["source"]] == [
        "dict[train]#0",
        "dict[train]#1",
        "dict[train]#2",
        "dict[test]#0",
    ]
    assert result.records["id"].to_list() == ["r0", "r1", "r2", "r0~2"]


def test_txt_file_and_paragraphs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = b"# Title\r\n\r\nFirst para\r\nstill first.\r\n\r\n\r\n  \r\nSecond.\r\n\r\nThird\n"
    Path("doc.md").write_bytes(text)
    whole = run("doc.md")
    assert whole.records.select("source", "kind").rows() == [("doc.md:1", "raw")]
    paragraphs = run("doc.md", txt_split="paragraph")
    assert paragraphs.records.select("source", "text").rows() == [
        ("doc.md:1", "# Title"),
        ("doc.md:3", "First para\nstill first."),
        ("doc.md:8", "Second."),
        ("doc.md:10", "Third"),
    ]
    Path("mixed.txt").write_bytes("good one, naïve\n\n".encode() + b"bad \xff byte\n\nlast")  # UTF-8 but one byte
    mixed = run("mixed.txt", txt_split="paragraph")
    assert mixed.records["source"].to_list() == ["mixed.txt:1", "mixed.txt:5"]
    assert mixed.rejected.select("source", "reason").rows() == [("mixed.txt:3", "bad_encoding")]
    assert mixed.rejected["detail"][0] == "not valid utf-8 (the file's encoding): byte 0xff at character 5"
    assert mixed.files[0].encoding == "utf-8"


def test_paragraphs_keep_fenced_code_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    markdown = (
        "# Use\n\nRun:\n```python\nimport os\n\n\nprint(os.sep)\n```\n\n"  # blank lines in the code
        "- item\n  ~~~\n  a\n\n  b\n  ~~~\n\n"  # tildes, indented in a list item
        "Inline ```x``` code.\n\nNext.\n"  # inline backticks open nothing
    )
    Path("doc.md").write_text(markdown)
    assert run("doc.md", txt_split="paragraph").records.select("source", "text").rows() == [
        ("doc.md:1", "# Use"),
        ("doc.md:3", "Run:\n```python\nimport os\n\n\nprint(os.sep)\n```"),
        ("doc.md:11", "- item\n  ~~~\n  a\n\n  b\n  ~~~"),
        ("doc.md:18", "Inline ```x``` code."),
        ("doc.md:20", "Next."),
    ]
    # Under a title, a bare run of backticks or tildes as long is a reStructuredText underline.
    Path("pep.rst").write_text("Title\n`````\n\nText.\n\nPart\n~~~~~~\n\nMore.\n\n    ~~~^^^\n\nEnd.\n")
    assert run("pep.rst", txt_split="paragraph").records["text"].to_list() == [
        "Title\n`````", "Text.", "Part\n~~~~~~", "More.", "    ~~~^^^", "End."
    ]


def test_an_unclosed_fence_runs_to_the_end_within_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.filters import build_filter_stage
    from curation.ingest import readers
    from schemas.config import Filters

    monkeypatch.chdir(tmp_path)
    code = "```python\ndef f():\n\n    return 1\n```\n\n"
    Path("whole.md").write_text("Intro.\n\n" + code + "Outro.\n")
    Path("cut.md").write_text("Intro.\n\n" + code + "```python\nx = 1\n\ny = 2\n\nz = 3\n")
    read = run(".", format="txt", txt_split="paragraph")
    assert read.records["source"].to_list() == ["cut.md:1", "cut.md:3", "cut.md:9", "whole.md:1", "whole.md:3", "whole.md:9"]
    assert read.records["text"][2] == "```python\nx = 1\n\ny = 2\n\nz = 3"
    # The format filter finds the cut fence, and only it.
    rejected = build_filter_stage(Filters.model_validate({"format": {"code": True}}))(read.records).rejected
    assert rejected.select("source", "reason").rows() == [("cut.md:9", "unbalanced_code_fence")]
    # Past MAX_LINE_BYTES, a paragraph held open by a fence ends at its next blank line.
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 7)
    Path("stray.md").write_text("```\na\nb\n\nc\n\nd\n")
    assert run("stray.md", txt_split="paragraph").records["text"].to_list() == ["```\na\nb", "c", "d"]


def test_json_container_and_json_lines_named_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    splits = {"version": 2, "train": [{"text": "a"}, {"text": "b"}], "test": [{"text": "c"}]}
    Path("splits.json").write_text(json.dumps(splits))
    assert run("splits.json").records["source"].to_list() == [
        "splits.json#train[0]",
        "splits.json#train[1]",
        "splits.json#test[0]",
    ]
    single = {"id": "s", "conversations": [turn("human", "q"), turn("gpt", "a")]}
    Path("single.json").write_text(json.dumps(single))  # an object that is itself a row
    assert run("single.json").records.select("id", "source").rows() == [("s", "single.json#0")]
    write_jsonl(Path("lines.json"), [{"text": "a"}, {"text": "b"}])  # what Dataset.to_json writes
    assert run("lines.json").records["source"].to_list() == ["lines.json:1", "lines.json:2"]


# --- bad input ------------------------------------------------------------------------------


def test_every_kind_of_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    good = {"instruction": "Name a colour.", "output": "Blue."}
    lines = [
        json.dumps({"id": "g1", **good, "note": "naïve"}, ensure_ascii=False).encode(),  # 1: good, sets the shape (alpaca), UTF-8
        b'{"instruction": "broken", ',  # 2: bad_json
        b'["not", "an", "object"]',  # 3: not_an_object
        json.dumps({"id": "m1", "instruction": "no answer"}).encode(),  # 4: missing_fields
        json.dumps({"instruction": ["a", "list"], "output": "x"}).encode(),  # 5: wrong_type
        json.dumps({"instruction": "   ", "output": "x"}).encode(),  # 6: empty_content
        b'{"instruction": "caf\xe9", "output": "x"}',  # 7: bad_encoding (a Latin-1 byte in a UTF-8 file)
        b"",  # 8: a blank line is not a row
        json.dumps({"id": "g2", **good}).encode(),  # 9: good
    ]
    Path("rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    image = {"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}
    robot = {"conversations": [turn("human", "q"), turn("robot", "a")]}
    write_jsonl(
        Path("chat.jsonl"),
        [
            {"messages": [user("hi"), bot("hello")]},  # 1: good
            {"messages": [user("only a question")]},  # 2: invalid_record (no assistant turn)
            {"messages": [image, bot("a")]},  # 3: wrong_type
            robot,  # 4: a ShareGPT row in a messages file is read as ShareGPT: its role is wrong_type
        ],
    )
    write_jsonl(Path("gpt.jsonl"), [robot])  # wrong_type: unknown role
    write_jsonl(Path("odd.jsonl"), [{"foo": 1, "bar": 2}, {"baz": 3}])  # unknown_shape
    Path("truncated.json").write_text('[{"text": "a"}, {"text": "b"')  # bad_json, whole file
    Path("corrupt.parquet").write_bytes(b"PAR1 this is not parquet")  # unreadable_file
    leaf = {"role": "assistant", "replies": [], "deleted": False, "review_result": True}
    replies = [
        {**leaf, "message_id": "ok", "text": "fine", "rank": 0},
        {**leaf, "message_id": "del", "text": "gone", "deleted": True},
        {**leaf, "message_id": "rev", "text": "spam", "review_result": False},
    ]
    root = {"message_id": "t", "role": "prompter", "text": "Q", "replies": replies}
    lone = {"message_id": "u", "role": "prompter", "text": "Unanswered", "replies": []}
    write_jsonl(
        Path("oasst.jsonl"),
        [{"message_tree_id": "t", "prompt": root}, {"message_tree_id": "u", "prompt": lone}],
    )

    names = ["rows.jsonl", "chat.jsonl", "gpt.jsonl", "odd.jsonl", "truncated.json"]
    names += ["corrupt.parquet", "oasst.jsonl"]
    result = ingest([InputSpec(path=n) for n in names], progress=False)

    assert result.records.select("id", "source").rows() == [
        ("g1", "rows.jsonl:1"),
        ("g2", "rows.jsonl:9"),
        (result.records["id"][2], "chat.jsonl:1"),
        ("ok", "oasst.jsonl:1"),
    ]
    rejects = result.rejected.select("source", "reason", "detail", "raw", "id").rows()
    assert [(source, reason) for source, reason, *_ in rejects] == [
        ("rows.jsonl:2", "bad_json"),
        ("rows.jsonl:3", "not_an_object"),
        ("rows.jsonl:4", "missing_fields"),
        ("rows.jsonl:5", "wrong_type"),
        ("rows.jsonl:6", "empty_content"),
        ("rows.jsonl:7", "bad_encoding"),
        ("chat.jsonl:2", "invalid_record"),
        ("chat.jsonl:3", "wrong_type"),
        ("chat.jsonl:4", "wrong_type"),
        ("gpt.jsonl:1", "wrong_type"),
        ("odd.jsonl:1", "unknown_shape"),
        ("odd.jsonl:2", "unknown_shape"),
        ("truncated.json", "bad_json"),
        ("corrupt.parquet", "unreadable_file"),
        ("oasst.jsonl:1", "oasst_deleted"),
        ("oasst.jsonl:1", "oasst_review_failed"),
        ("oasst.jsonl:2", "invalid_record"),
    ]
    detail = {f"{source}/{reason}": d for source, reason, d, _, _ in rejects}
    assert detail["rows.jsonl:4/missing_fields"] == "output"
    assert detail["rows.jsonl:5/wrong_type"] == "instruction: expected string, got list"
    assert detail["rows.jsonl:6/empty_content"] == "instruction"
    assert detail["rows.jsonl:7/bad_encoding"] == "not valid utf-8 (the file's encoding): byte 0xe9 at character 21"
    assert detail["chat.jsonl:2/invalid_record"] == "sft record has no assistant turn"
    assert detail["chat.jsonl:3/wrong_type"] == (
        "messages[0].content[0]: unsupported content part 'image_url'"
    )
    assert detail["chat.jsonl:4/wrong_type"] == "conversations[1].from: unknown role 'robot'"
    assert detail["gpt.jsonl:1/wrong_type"] == "conversations[1].from: unknown role 'robot'"
    assert detail["odd.jsonl:2/unknown_shape"].startswith("no shape fits keys: baz")
    assert detail["oasst.jsonl:1/oasst_deleted"] == "prompt.replies[1] (del)"
    assert detail["oasst.jsonl:1/oasst_review_failed"] == "prompt.replies[2] (rev)"
    # Rows that never became a record keep their input text; a file that failed whole has none.
    raw = {f"{source}/{reason}": r for source, reason, _, r, _ in rejects}
    assert raw["rows.jsonl:2/bad_json"] == '{"instruction": "broken", '
    assert raw["rows.jsonl:7/bad_encoding"] == '{"instruction": "caf\ufffd", "output": "x"}'
    assert raw["truncated.json/bad_json"] == '[{"text": "a"}, {"text": "b"'
    assert raw["corrupt.parquet/unreadable_file"] is None
    assert rejects[2][4] == "m1"  # an input id is kept on its reject
    # oasst rejects are whole conversations, traceable to their message ids.
    deleted = result.rejected.filter(pl.col("reason") == "oasst_deleted").row(0, named=True)
    assert (deleted["id"], deleted["kind"]) == ("del", "sft")
    assert deleted["messages"] == [user("Q"), bot("gone")]
    assert json.loads(deleted["meta"])["message_ids"] == ["t", "del"]

    stats = result.stats()
    assert stats.rows_in == stats.out + stats.removed == 4 + 17
    assert stats.removed_by_reason["unknown_shape"] == 2
    assert result.rows_read == 8 + 4 + 1 + 2 + 1 + 1 + 2
    # Per file: what was detected and what became of its rows.
    files = {f.path: f for f in result.files}
    assert files["chat.jsonl"].shape == "mixed: messages 3, sharegpt 1"
    assert (files["rows.jsonl"].rows_read, files["rows.jsonl"].records, files["rows.jsonl"].rejected) == (8, 2, 6)
    assert files["odd.jsonl"].entry().removed_by_reason == {"unknown_shape": 2}
    assert sum(f.rows_read for f in result.files) == result.rows_read


def test_raw_is_truncated(tmp_path: Path) -> None:
    result = one([{"instruction": "x" * 5000}], tmp_path, shape="alpaca")
    assert len(result.rejected["raw"][0]) == 2000


def test_100k_rows_in_seconds(tmp_path: Path) -> None:
    rows = [{"question": f"What is {i}+{i}?", "answer": f"{2 * i}."} for i in range(100_000)]
    result = one(rows, tmp_path)
    assert result.records.height == 100_000
    assert result.seconds < 25  # ~4 s on a busy 2-core machine; catches anything quadratic


# --- compressed files, HH-RLHF transcripts, column mappings, directories --------------------


def test_compressed_inputs_by_name_and_by_magic_bytes(public_data: Path, tmp_path: Path) -> None:
    import bz2
    import gzip

    import pyarrow as pa

    gsm8k = (public_data / "sft/gsm8k_test.jsonl").read_bytes()
    (tmp_path / "gsm8k.jsonl.gz").write_bytes(gzip.compress(gsm8k))
    (tmp_path / "gsm8k.jsonl").write_bytes(gzip.compress(gsm8k))  # gzipped, named plainly
    fastchat = (public_data / "sft/fastchat_dummy_conversation_sharegpt.json").read_bytes()
    (tmp_path / "fastchat.json.bz2").write_bytes(bz2.compress(fastchat))
    with pa.output_stream(str(tmp_path / "pairs.csv.zst"), compression="zstd") as f:
        f.write(b"question,answer\nWhat is 2+2?,4\n")
    for name, kind, records in [("gsm8k.jsonl.gz", "gzip", 200), ("gsm8k.jsonl", "gzip", 200),
                                ("fastchat.json.bz2", "bz2", 500), ("pairs.csv.zst", "zstd", 1)]:
        result = run(tmp_path / name)
        assert (result.records.height, result.rejected.height) == (records, 0), name
        assert (result.files[0].compression, result.files[0].rejected) == (kind, 0)
    assert detect_format(tmp_path / "gsm8k.jsonl.gz") == "jsonl"
    (tmp_path / "dump.gz").write_bytes(gzip.compress(b'{"text": "x"}\n'))
    with pytest.raises(ConfigError, match=r"dump\.gz: a gzip-compressed file .* data\.jsonl\.gz or set `format:`"):
        detect_format(tmp_path / "dump.gz")
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(gsm8k)[:5000])  # a truncated download
    cut = run(tmp_path / "cut.jsonl.gz")
    assert cut.rejected["reason"].to_list()[-1] == "unreadable_file"
    assert cut.records.height > 0


HH_CHOSEN = "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for nine minutes."
HH_REJECTED = "\n\nHuman: How do I boil an egg?\n\nAssistant: Eggs are bad."
HH_TWO_TURNS = (
    "\n\nHuman: Name a prime.\n\nAssistant: 7.\n\nHuman: A bigger one?\n\nAssistant: 11, and 13 too."
)


def test_hh_rlhf_transcripts(tmp_path: Path) -> None:
    import gzip

    rows = [
        {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
        {"chosen": HH_TWO_TURNS, "rejected": HH_TWO_TURNS.replace("11, and 13 too.", "No.")},
        {"chosen": "Human: no blank lines\n\nAssistant: ok", "rejected": "nothing shared"},
    ]
    path = tmp_path / "harmless-base.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    result = run(path)
    assert result.files[0].shape == "hh_rlhf"
    assert result.records["kind"].to_list() == ["preference", "preference"]
    assert result.records["messages"][0].to_list() == [user("How do I boil an egg?")]
    assert result.records["chosen"][0].to_list() == [bot("Put it in boiling water for nine minutes.")]
    assert result.records["rejected"][0].to_list() == [bot("Eggs are bad.")]
    assert result.records["messages"][1].to_list() == [user("Name a prime."), bot("7."), user("A bigger one?")]
    reason, detail = result.rejected.select("reason", "detail").row(0)
    assert (reason, detail) == ("wrong_type", "rejected: not a '\\n\\nHuman: ... \\n\\nAssistant: ...' transcript")
    # One transcript per row (red-team attempts) is a conversation.
    chat = one([{"transcript": HH_TWO_TURNS, "rating": 2}], tmp_path)
    expected = [user("Name a prime."), bot("7."), user("A bigger one?"), bot("11, and 13 too.")]
    assert chat.records["messages"][0].to_list() == expected
    assert json.loads(chat.records["meta"][0]) == {"rating": 2, "shape": "hh_rlhf"}


def test_csv_with_a_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_text('Question ID,User Prompt,Model Answer\nq1,What is the capital of France?,"Paris, on the Seine."\n')
    unmapped = run(path)
    assert unmapped.rejected["reason"].to_list() == ["unknown_shape"]
    assert "set `shape:` or `columns:`" in unmapped.rejected["detail"][0]
    columns = {"id": "Question ID", "prompt": "User Prompt", "response": "Model Answer"}
    mapped = run(path, columns=columns)
    assert mapped.records.select("id", "kind").row(0) == ("q1", "sft")
    assert mapped.records["messages"][0].to_list() == [user("What is the capital of France?"), bot("Paris, on the Seine.")]
    assert mapped.files[0].shape == "alpaca"
    # LLaMA-Factory's names for a ranking set and for history.
    ranked = one([{"q": "Say hi", "good": "Hi!", "bad": "No.", "past": [["Hello?", "Hello."]]}], tmp_path,
                 columns={"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert ranked.records.select("kind", "chosen").row(0) == ("preference", [bot("Hi!")])
    assert json.loads(ranked.records["meta"][0])["past"] == [["Hello?", "Hello."]]
    history = one([{"q": "And now?", "a": "Bye.", "h": [["Hello?", "Hello."]]}], tmp_path,
                  columns={"prompt": "q", "response": "a", "history": "h"})
    assert history.records["messages"][0].to_list() == [user("Hello?"), bot("Hello."), user("And now?"), bot("Bye.")]
    with pytest.raises(ConfigError, match=r"answers\.csv: `columns:` names columns the file does not have: Answer"):
        check_inputs([InputSpec(path=str(path), columns={"prompt": "User Prompt", "response": "Answer"})])  # curate run too


def test_a_directory_reads_only_its_data_files(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    (folder / ".cache").mkdir(parents=True)
    write_jsonl(folder / "part-0.jsonl", [{"text": "one"}])
    write_jsonl(folder / ".cache" / "part-9.jsonl", [{"text": "hidden"}])
    (folder / "notes.md").write_text("a markdown document is text data")
    for name in ("README.md", "LICENSE", "LICENSE.txt", ".gitattributes", "convert.py"):
        (folder / name).write_text("not data")
    (folder / "empty.jsonl").write_text("")
    result = run(folder)
    assert sorted(result.records["text"].to_list()) == ["a markdown document is text data", "one"]
    skipped = sorted(Path(p).name for p in result.skipped)
    assert skipped == [".gitattributes", "LICENSE", "LICENSE.txt", "README.md", "convert.py", "part-9.jsonl"]
    empty = next(f for f in result.files if f.path.endswith("empty.jsonl"))
    assert empty.line().endswith("0 rows read, 0 records, 0 rejected - an empty file")
    assert result.stats().figures.skipped_files == result.skipped


# --- encodings and what may be opened ----------------------------------------------------------


def test_text_encodings(public_data: Path, tmp_path: Path) -> None:
    """Each text file is decoded in its own encoding, shown per file; only lines its encoding
    cannot decode are rejected, and every row is accounted for."""
    speeches = run(public_data / "raw" / "state_union")  # one speech is cp1252 / Latin-1
    encodings = {Path(f.path).name: f.encoding for f in speeches.files}
    assert sorted(n for n, e in encodings.items() if e == "cp1252") == ["1954-Eisenhower.txt"]
    assert set(encodings.values()) == {"cp1252", "ascii"}
    assert speeches.rejected.height == 0 and speeches.records.height == 5
    assert any("the ½¢ decrease" in t for t in speeches.records["text"])

    rows = [{"instruction": f"Übersetze Nummer {i}", "output": f"Translate number {i} — naïve"} for i in range(3)]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    utf16 = ("\r\n".join(lines[:2]) + "\r\n").encode("utf-16")  # BOM, CRLF: as Windows tools write it
    bad = '{"instruction": "x", "output": "'.encode("utf-16-le") + b"\x00\xd8" + '"}\r\n'.encode("utf-16-le")
    (tmp_path / "win.jsonl").write_bytes(utf16 + bad + (lines[2] + "\r\n").encode("utf-16-le"))
    (tmp_path / "nobom.jsonl").write_bytes("\n".join(lines).encode("utf-16-le"))
    import gzip

    (tmp_path / "bom.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode("utf-8-sig")))
    ascii_head = "".join(json.dumps({"text": f"plain line {i}"}) + "\n" for i in range(3000))  # > HEAD_BYTES
    (tmp_path / "late.jsonl").write_bytes(ascii_head.encode() + '{"text": "café crème"}\n'.encode("cp1252"))
    (tmp_path / "excel.csv").write_bytes("instruction,output\nSay café,Café\n".encode("cp1252"))
    (tmp_path / "bom.csv").write_bytes("instruction,output\nSay café,Café\n".encode("utf-8-sig"))
    result = run(tmp_path / "*")

    files = {f.path.rsplit("/", 1)[1]: f for f in result.files}
    assert {n: (f.encoding, f.records, f.rejected) for n, f in files.items()} == {
        "bom.csv": ("utf-8-sig", 1, 0),
        "bom.jsonl.gz": ("utf-8-sig", 3, 0),
        "excel.csv": ("cp1252", 1, 0),
        "late.jsonl": ("cp1252", 3001, 0),
        "nobom.jsonl": ("utf-16-le", 3, 0),
        "win.jsonl": ("utf-16", 3, 1),
    }
    assert files["win.jsonl"].line().startswith(f"{tmp_path}/win.jsonl (jsonl, utf-16): alpaca, 4 rows read")
    assert files["bom.jsonl.gz"].entry().encoding == "utf-8-sig"
    texts = [m[0]["content"] for m in result.records["messages"].to_list() if m]
    assert texts.count("Übersetze Nummer 2") == 3 and texts.count("Say café") == 2
    assert "café crème" in result.records["text"].to_list()
    assert result.rejected.select("source", "reason", "detail").rows() == [
        (f"{tmp_path}/win.jsonl:3", "bad_encoding", "not valid utf-16 (the file's encoding): byte 0x00 at character 33")
    ]
    assert result.records.height + result.rejected.height == result.rows_read


def test_a_csv_with_undecodable_bytes_is_rejected_naming_the_line(tmp_path: Path) -> None:
    data = "instruction,output\nSay naïve,Naïve\n".encode() + b"Say caf\xe9,x\n"  # UTF-8 but for one byte
    (tmp_path / "rows.csv").write_bytes(data)
    result = run(tmp_path / "rows.csv")
    assert result.rejected.select("reason", "detail").rows() == [
        ("bad_encoding", "line 3: not valid utf-8 (the file's encoding): byte 0xe9 at character 8")
    ]
    assert result.records.height == 0 and result.rows_read == 1


def _cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    from flows.cli import main

    code = main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def test_special_files_and_run_outputs_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "ok.jsonl").write_text('{"text": "fine"}\n')
    config = tmp_path / "c.yaml"
    config.write_text("inputs: [{path: data}]\n")
    os.mkfifo(data / "pipe.jsonl")  # `curate run` used to hang on it (the checkpoint hashed it)
    out = tmp_path / "run"
    for command in (["validate", str(config)], ["run", str(config), "--out", str(out)]):
        code, err = _cli(command, capsys)
        assert code == 2
        only = "only regular files (and directories of them) are read as inputs"
        assert err == f"curate: error: inputs[0].path: {data / 'pipe.jsonl'} is a FIFO: {only}\n"
    assert not out.exists()
    (data / "pipe.jsonl").unlink()

    config.write_text("inputs: [{path: /proc/self/environ, format: txt}]\n")  # the environment, keys included
    code, err = _cli(["validate", str(config)], capsys)
    assert code == 2 and "inputs[0].path: /proc/self/environ is under /proc (a kernel file, not data)" in err

    config.write_text("inputs: [{path: data}]\n")
    for inside in (data, data / "runs" / "first"):  # the input folder is, or holds, the run's output
        code, err = _cli(["run", str(config), "--out", str(inside)], capsys)
        assert code == 2
        assert err == (f"curate: error: inputs[0].path: {data} holds the run's output {inside}: the run would"
                       " read its own outputs; write them elsewhere\n")
    assert not (data / "runs").exists()
    config.write_text("inputs: [{path: 'data/*.jsonl'}]\n")  # a file inside the output (a resumed run's)
    code, err = _cli(["run", str(config), "--out", str(data)], capsys)
    assert code == 2 and err.endswith(f"{data / 'ok.jsonl'} is inside the run's output {data}\n")


def test_inputs_on_s3_read_as_the_same_local_files(public_data: Path, tmp_path: Path, s3: str) -> None:
    """Gzipped JSON Lines, a plain file in a sub-folder and a README in a bucket folder: expanded
    and read by the same rules as a local folder, with `s3://bucket/key:line` sources."""
    import gzip

    from curation.core.storage import RemotePath

    gsm8k = (public_data / "sft" / "gsm8k_test.jsonl").read_bytes()[:200_000].rsplit(b"\n", 1)[0] + b"\n"
    latin = '{"instruction": "Caf\xe9 au lait?", "output": "Un caf\xe9 cr\xe8me, s\'il vous pla\xeet."}\n'.encode("cp1252")
    local = tmp_path / "in"
    (local / "sub").mkdir(parents=True)
    (local / "gsm8k.jsonl.gz").write_bytes(gzip.compress(gsm8k))
    (local / "sub" / "latin.jsonl").write_bytes(latin)
    (local / "README.md").write_text("not data")
    remote = RemotePath(f"{s3}/in")
    remote.put(local)

    here, there = ingest([InputSpec(path=str(local))], progress=False), ingest([InputSpec(path=str(remote))], progress=False)
    assert there.records.height == here.records.height > 100
    assert there.records.drop("source").equals(here.records.drop("source"))
    assert there.records["source"][0] == f"{remote}/gsm8k.jsonl.gz:1"
    assert [(f.path, f.compression, f.encoding) for f in there.files] == [
        (f"{remote}/gsm8k.jsonl.gz", "gzip", "ascii"), (f"{remote}/sub/latin.jsonl", None, "cp1252")]
    assert [f.entry().model_copy(update={"path": ""}) for f in there.files] == [
        f.entry().model_copy(update={"path": ""}) for f in here.files
    ]
    assert there.skipped == [f"{remote}/README.md"]
    assert expand_input(f"{remote}/**/*.jsonl*") == [remote / "gsm8k.jsonl.gz", remote / "sub/latin.jsonl"]
    with pytest.raises(ConfigError, match=r"the bucket no-such-bucket-x does not exist"):
        expand_input("s3://no-such-bucket-x/in/*.jsonl")
