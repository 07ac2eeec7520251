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
    "email": ["jane.doe+work@example-mail.co.uk", "k.smith@uni-heidelberg.de"],
    "phone": ["(415) 555-2671", "+44 20 7946 0958"],
    "ip": ["151.101.1.69", "2606:4700:4700::1111"],
    "credit_card": ["4111 1111 1111 1111", "3782-822463-10005"],
    "secret": [
        "sk-proj-abcdEFGHijklMNOPqrstUVWX1234567890",
        "ghp_" + "a1B2c3D4e5" * 4,
        "AKIAIOSFODNN7EXAMPLE",
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


def _planted_rows(shared_data: Path) -> list[dict]:
    """Real Alpaca records, one planted value per record in its answer (one in an extra key: meta)."""
    rows = json.loads((shared_data / "sft" / "llamafactory_alpaca_en_demo.json").read_text())[:40]
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
def test_no_pii_left_in_the_run_directory(tmp_path: Path, shared_data: Path, action: str) -> None:
    rows = _planted_rows(shared_data)
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
