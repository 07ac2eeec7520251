"""PII redaction and dropping: planted PII of every kind in real instruction data, found and
replaced, and afterwards no PII string anywhere in the run directory (parquet files read
column by column, every other file as bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curation.core.run import run_pipeline
from curation.pii.detect import KINDS, find, luhn, redact
from curation.report.html import write_report
from schemas.config import CurateConfig

PLANTED = {
    "email": ["jane.doe+work@mail-host.co.uk", "k.smith@uni-heidelberg.de"],
    "phone": ["(415) 555-2671", "+44 20 7946 0958"],
    "ip": ["151.101.1.69", "2606:4700:4700::1111"],
    "credit_card": ["4111 1111 1111 1111", "3782-822463-10005"],
    "secret": [
        "sk-proj-abcdEFGHijklMNOPqrstUVWX1234567890",
        "ghp_" + "a1B2c3D4e5" * 4,
        "AKIAIOSFODNN7EXAMPLE",
        "AIzaZwza_QYV6FAfdLvM5NVDxwLVosRxWNPOiV-",  # a Google key may end in -
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx3f9Tq\nabcDEF0123==\n-----END RSA PRIVATE KEY-----",
    ],
}
NOT_PII = [
    "Janet sells 16 - 3 - 4 = 9 duck eggs a day.",  # arithmetic
    "# 1 2 3 4 5 6 7 8 9 10\n# 3 6 9 12 15 18 21 24 27 30",  # a digit table (Luhn-valid by chance)
    "largest = -2147483648",  # an integer, not a US number
    "Python 3.11.4 on 127.0.0.1:8080 and 192.168.1.20",  # versions, loopback and private addresses
    "std::vector<int> and a::b",  # C++, not IPv6
    "1234 5678 9012 3456",  # card-shaped, fails Luhn
    "The meeting is at 12:30:45 on 2024-05-01.",
]


def test_every_kind_is_found_and_nothing_else() -> None:
    for kind, values in PLANTED.items():
        for value in values:
            text = f"For the record, {value} is what they sent."
            assert [(text[s:e], k) for s, e, k in find(text, KINDS)] == [(value, kind)], value
    for text in NOT_PII:
        assert find(text, KINDS) == [], text
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    text, counts = redact("mail a@b.org or b@c.net, call (415) 555-2671", ["email"])
    assert text == "mail <EMAIL> or <EMAIL>, call (415) 555-2671" and counts == {"email": 2}


# Phone numbers as people write them; the US area codes and UK/DE/FR/IN numbers are unassigned
# (phonenumbers calls them invalid), which identifies no one less.
PHONES = [
    "Call me at (358) 278-9399 tomorrow.", "my number is 244-502-1636, text me", "Office: 586.767.9622",
    "Phone: +1-983-205-3361", "call 1-800-555-0199", "UK mobile 07945 813639", "London (020) 7946 0958",
    "Berlin 030 98011464", "from abroad 0049 30 12345678", "Fax: +49 (0)30 1234567", "Paris 06 78 17 04 17",
    "or 06.78.17.04.17", "Pune 067266 69357", "Tokyo +81 3-5682-9904", "Sao Paulo +55 11 96934-4600",
    "E.164 +14155552671", "Phone: 4155552671", "call 555-1234",
]
# Digits of code, maths and versions that a phone, card or IP reading would get wrong.
NUMBERS = [
    "Area = 50.26548245743669",  # a decimal, not a card
    "INT_MAX is 2147483647 on most platforms", "MAX = 2147483647",  # an integer, not a US number
    "y = 604-457-4895 + 3",  # arithmetic
    "zstd (1.5.0.3) and Python 2.6.18.6", "version 3.3.9.45", "network 74.125.224.0",  # versions, a network
    "ham[1::3] and 2.4a2:: and fe80:1::",  # slices and reST, not IPv6
    "01 02 03 04 05", "released on 06-11-2008 and 01.05.2024",  # a count and dates
    "size = 13102536", "ISBN 978-3-16-148410-0", "id 00123456789",
    "mail support@foo.example.com, user@example.org, me@host.test or you@yourdomain.com",  # documentation
]


def test_phones_are_found_by_shape_whatever_the_area_code() -> None:
    for text in PHONES:
        (span,) = find(text, KINDS)
        assert span[2] == "phone" and text[span[1]:] in ("", " tomorrow.", ", text me"), text
        assert text[span[0] - 1] == " ", text  # the whole number, its + or ( included


def test_numbers_of_code_and_maths_are_kept() -> None:
    for text in NUMBERS:
        assert find(text, KINDS) == [], text
    assert find("contact a@example.com", ["email"], keep_documentation=False) == [(8, 21, "email")]


def test_code_keeps_its_numbers_but_not_its_secrets() -> None:
    key = "sk-proj-abcdEFGHijklMNOPqrstUVWX1234567890"
    code = f'```python\nHOST = "151.101.1.69"\nCARD = "4111 1111 1111 1111"\nKEY = "{key}"\nTO = "k.smith@gmail.com"\n```'
    literal = "Run it like this::\n\n    $ dial 030 98011464\n\nor call (415) 555-2671 and see ``151.101.1.69``."
    for text, kept in ((code, 2), (literal, 2)):
        found = find(text, KINDS)
        everything = find(text, KINDS, skip_code=False)
        assert len(everything) - len(found) == kept, text
    assert [k for _, _, k in find(code, KINDS)] == ["secret", "email"]
    assert [text for s, e, _ in find(literal, KINDS) for text in [literal[s:e]]] == ["(415) 555-2671"]
    # A fence left open runs to the end: what follows is code too.
    assert find("```\nx = 151.101.1.69\n", KINDS) == []


def test_real_technical_text_holds_almost_no_numbers_to_redact(public_data: Path) -> None:
    """The shipped PEP bodies (headers hold authors' addresses), GPTeacher's code tasks, GSM8K's
    worked answers and Self-Instruct's tasks: of phones, IPs and cards, only the business phone
    number in a Self-Instruct task's input (a Yelp listing)."""
    texts = [p.read_text().split("\n\n", 1)[-1] for p in sorted((public_data / "raw" / "peps").glob("pep-*.rst"))]
    sft = public_data / "sft"
    code = json.loads((sft / "gpteacher_codegen_instruct.json").read_text())
    texts += ["\n\n".join(r[k] for k in ("instruction", "input", "response")) for r in code]
    texts += [f"{r['question']}\n\n{r['answer']}" for r in _jsonl(sft / "gsm8k_test.jsonl")]
    texts += ["\n\n".join([r["instruction"], *(f"{i['input']}\n{i['output']}" for i in r["instances"])])
              for r in _jsonl(sft / "selfinstruct_user_oriented_252.jsonl")]
    assert len(texts) == 6 + 500 + 200 + 252
    found = {(k, t[s:e]) for t in texts for s, e, k in find(t, ["phone", "ip", "credit_card"])}
    assert found == {("phone", "650-636-4884")}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _planted_rows(public_data: Path) -> list[dict]:
    """Real GSM8K problems as Alpaca records, one planted value per record in its answer (one in
    an extra key: meta)."""
    gsm8k = _jsonl(public_data / "sft" / "gsm8k_test.jsonl")[:40]
    rows = [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in gsm8k]
    values = [v for vs in PLANTED.values() for v in vs]
    for row, value in zip(rows, values, strict=False):
        row["output"] += f"\n\nIf anything is unclear, use {value} to get in touch."
    rows[len(values)]["contact"] = PLANTED["email"][0]  # an extra key: kept in meta
    rows[len(values) + 1]["output"] = f"ok {PLANTED['phone'][0]}"  # removed by the length filter later
    # Not an object: rejected by ingest before PII runs, with its input in `raw` (redacted afterwards).
    rows.append(f"card {PLANTED['credit_card'][0]}, mail {PLANTED['email'][1]}")
    return rows


def _config(tmp_path: Path, rows: list[dict], action: str) -> CurateConfig:
    data = tmp_path / "in.json"
    data.write_text(json.dumps(rows))
    return CurateConfig.model_validate({
        "inputs": [{"path": str(data)}],
        "pii": {"action": action},
        "filters": {"length": {"roles": {"assistant": {"min_words": 4}}}},
        "dedup": {"exact": {}},
    })


def _leaks(run_dir: Path) -> list[str]:
    """Every planted value found in any file under run_dir, as 'file: value'."""
    values = [v for vs in PLANTED.values() for v in vs]
    found = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            content = "\n".join(str(v) for col in frame.columns for v in frame[col].to_list())
        else:
            content = path.read_bytes().decode("utf-8", "replace")
        found += [f"{path.relative_to(run_dir)}: {v}" for v in values if v in content or json.dumps(v)[1:-1] in content]
    return found


@pytest.mark.parametrize("action", ["redact", "drop"])
def test_no_pii_left_in_the_run_directory(tmp_path: Path, public_data: Path, action: str) -> None:
    rows = _planted_rows(public_data)
    out = tmp_path / "run"
    stats = run_pipeline(_config(tmp_path, rows, action), out)
    html = write_report(out).read_text()
    assert "records held PII" in html
    assert _leaks(out) == []
    pii = stats.stages[1]
    planted = sum(len(v) for v in PLANTED.values())
    assert pii.stage == "pii" and pii.model_dump()["found"] == {
        **{k: len(v) for k, v in PLANTED.items()}, "email": len(PLANTED["email"]) + 1, "phone": len(PLANTED["phone"]) + 1
    }
    assert stats.invariant.holds and stats.totals.kept + stats.totals.rejected == len(rows)  # the malformed row too
    kept = pl.read_parquet(out / "kept.parquet")
    rejected = pl.read_parquet(out / "rejected.parquet")
    (malformed,) = rejected.filter(pl.col("stage") == "ingest")["raw"].to_list()
    assert "<CREDIT_CARD>" in malformed and "<EMAIL>" in malformed
    if action == "redact":
        assert pii.removed == 0  # redaction changes text, never the row count
        answers = kept["messages"].list.last().struct.field("content")
        assert answers.str.contains("use <SECRET> to get in touch").sum() == len(PLANTED["secret"])
        assert answers.str.contains("<CREDIT_CARD>|<IP_ADDRESS>|<PHONE>|<EMAIL>").sum() == planted - len(PLANTED["secret"])
        metas = [json.loads(m) for m in kept["meta"]]
        assert sum(1 for m in metas if "pii" in m) == planted + 1
        assert {"contact": "<EMAIL>", "pii": {"email": 1}, "shape": "alpaca"} in metas
        too_short = rejected.filter(pl.col("stage") == "filters")["messages"].list.last().struct.field("content")
        assert "ok <PHONE>" in too_short.to_list()  # later stages' rejects carry the redacted text
        again = run_pipeline(_config(tmp_path, rows, action), out)  # resumes: ingest redone, later steps restored
        assert again.totals == stats.totals and _leaks(out) == []
    else:
        dropped = rejected.filter(pl.col("stage") == "pii")
        assert dropped.height == planted + 2 and set(dropped["reason"]) == {"pii"}
        assert "found credit_card x1 (stored redacted)" in dropped["detail"].to_list()
        assert pii.removed == planted + 2 and not kept["meta"].str.contains('"pii"').any()


@pytest.mark.parametrize("strict", [False, True])
def test_config_chooses_whether_code_and_documentation_are_redacted(tmp_path: Path, strict: bool) -> None:
    answer = "Write to support@example.com or run ``ping 151.101.1.69`` with `KEY = sk-ant-api03-abcdefghijKLMNOPQRSTuv`."
    data = tmp_path / "in.json"
    data.write_text(json.dumps([{"instruction": "How do I reach support?", "output": answer}]))
    config = CurateConfig.model_validate({
        "inputs": [{"path": str(data)}], "pii": {"skip_code": not strict, "keep_documentation": not strict},
    })
    run_pipeline(config, tmp_path / "run")
    (kept,) = pl.read_parquet(tmp_path / "run" / "kept.parquet")["messages"].list.last().struct.field("content")
    if strict:
        assert kept == "Write to <EMAIL> or run ``ping <IP_ADDRESS>`` with `KEY = <SECRET>`."
    else:
        assert kept == "Write to support@example.com or run ``ping 151.101.1.69`` with `KEY = <SECRET>`."
