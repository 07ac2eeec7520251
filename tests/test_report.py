"""The HTML run report: built from a small but complete run directory, rendered in headless
Chromium (the page must draw offline, show every section and never run text from the data)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import skip_or_fail  # tests/ (no __init__.py) is on sys.path under pytest
from PIL import Image

from curation.report.charts import histogram
from curation.report.html import write_report
from schemas.record import Record, records_frame, rejects_frame

SECTIONS = ["summary", "funnel", "reasons", "lengths", "duplicates", "contamination", "languages", "pii", "jury", "sources",
            "validation", "version", "training"]
CHARTED = ["funnel", "reasons", "lengths", "duplicates", "jury", "sources", "training"]
TITLE = "curate report: run"
# Data that would act if the report did not escape it.
SCRIPT = "<script>document.title='pwned'</script><script>alert(1)</script>"
IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
BAD_FILE = "data/bad<script>alert(2)</script>.jsonl"  # file names reach the charts' SVG labels
KEPT_BLUE, REMOVED_RED, LENGTH_PURPLE = (37, 99, 235), (220, 38, 38), (124, 58, 237)
JUDGES = ["helpfulness", "accuracy"]
GSM8K_ITEM = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning."


# --- a run directory ----------------------------------------------------------------------------


def sft(rid: str, line: int, user: str, answer: str, jury: dict | None = None) -> dict:
    meta = {"shape": "alpaca", **({"jury": jury} if jury else {})}
    return Record(
        id=rid, source=f"data/alpaca.jsonl:{line}", kind="sft", meta=meta,
        messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
    ).to_row()


def raw(rid: str, line: int, text: str) -> dict:
    return Record(id=rid, source=f"data/raw.jsonl:{line}", kind="raw", text=text, meta={"shape": "text"}).to_row()


def jury_meta(scores: dict[str, float | None]) -> dict:
    valid = [s for s in scores.values() if s is not None]
    return {"score": sum(valid) / len(valid), "judges": scores, "spread": max(valid) - min(valid), "method": "jury"}


SCORES = {  # record -> judge scores (None: the judge's answer could not be parsed)
    "a1": [4, 4], "a4": [2, 1], "a5": [5, 4], "a6": [3, None], "a7": [4, 3], "a8": [5, 2], "syn-1": [4, 4], "syn-2": [3, 3],
}


def build_run(run: Path) -> None:
    answer = "Rust guarantees memory safety through ownership, borrowing and lifetimes checked at compile time. " * 3
    jury = {rid: jury_meta(dict(zip(JUDGES, s, strict=True))) for rid, s in SCORES.items()}
    kept = [
        sft("a1", 1, "Explain ownership in Rust.", answer, jury["a1"]),
        sft("a5", 5, "Write a web page that greets the user.", f"Here it is: {SCRIPT} {IMG} done.", jury["a5"]),
        sft("a6", 6, "What is a borrow checker?", "It is the compiler pass that enforces borrowing rules " * 4, jury["a6"]),
        sft("a7", 7, "Close this tag: </pre></div><script>alert(1)</script>", "Use </div> to close it. " * 5, jury["a7"]),
        sft("a8", 8, "Summarise the history of the printing press in detail.", "Gutenberg's press, about 1440. " * 40,
            jury["a8"]),
        raw("r1", 1, "The harbour town woke slowly under a grey sky, fishing boats already out. " * 6),
        raw("r3", 3, "Volunteers planted four hundred trees along the river bank on Saturday morning. " * 3),
        raw("r4", 4, "A short note on compilers: parsing, analysis, optimisation and code generation. " * 12),
        {**Record(id="syn-1", source="data/raw.jsonl:1@0-400", kind="sft", meta={"jury": jury["syn-1"]},
                  messages=[{"role": "user", "content": "When did the boats leave?"},
                            {"role": "assistant", "content": "Before the town woke, under a grey sky."}]).to_row()},
        {**Record(id="syn-2", source="data/raw.jsonl:1@400-800", kind="sft", meta={"jury": jury["syn-2"]},
                  messages=[{"role": "user", "content": "Describe the sky."},
                            {"role": "assistant", "content": "It was grey over the harbour town that morning."}]).to_row()},
        Record(id="pref-1", source="preference:a1", kind="preference", meta={"preference": {"margin": 1.5}},
               messages=[{"role": "user", "content": "Explain ownership in Rust."}],
               chosen=[{"role": "assistant", "content": answer}],
               rejected=[{"role": "assistant", "content": "Rust has a garbage collector."}]).to_row(),
    ]
    rejected = [
        {"id": None, "source": f"{BAD_FILE}:1", "stage": "ingest", "reason": "bad_json",
         "detail": "unexpected character: line 1 column 2", "raw": '{"instruction": ' + IMG},
        {**sft("a9", 9, "Hi", "Ok."), "stage": "filters", "reason": "too_few_words", "detail": "2 words < 3"},
        {**sft("a10", 10, "Who are you?", "As an AI language model I cannot have opinions about that topic."),
         "stage": "filters", "reason": "excluded_keyword", "detail": "as an ai language model"},
        *[{**sft(rid, line, "Explain ownership in Rust.", answer), "stage": "dedup_exact", "reason": "exact_duplicate",
           "detail": "same text after normalising case, whitespace", "duplicate_of": "a1"}
          for rid, line in (("a2", 2), ("a3", 3))],
        {**raw("r2", 2, "The harbour town woke slowly under a grey sky, fishing boats already out! " * 6),
         "stage": "dedup_minhash", "reason": "near_duplicate", "detail": "jaccard 0.93", "duplicate_of": "r1"},
        {**sft("a4", 4, "Tell me a joke.", "No.", jury["a4"]), "stage": "jury", "reason": "low_jury_score",
         "detail": "score 1.50 < 3.0 (helpfulness 2.00, accuracy 1.00)"},
        {**sft("a11", 11, f"Homework: {GSM8K_ITEM}", "18 dollars."), "stage": "decontamination", "reason": "benchmark_overlap",
         "detail": "gsm8k_test: item g1 (bench/gsm8k_test.jsonl:1, user turn 1): 41/41 of its words in shared 13-grams (1.00)"},
    ]
    run.mkdir(parents=True)
    records_frame(kept).write_parquet(run / "kept.parquet")
    rejects_frame(rejected).write_parquet(run / "rejected.parquet")
    (run / "stats.json").write_text(json.dumps(stats(len(kept), len(rejected))))
    write_ratings(run / "jury")
    (run / "decontamination").mkdir()
    pl.DataFrame([{"id": "a11", "reason": "benchmark_overlap", "benchmark": "gsm8k_test", "item": "g1",
                   "item_source": "bench/gsm8k_test.jsonl:1", "part": "user turn 1", "benchmark_text": GSM8K_ITEM + IMG,
                   "score": 1.0}]).write_parquet(run / "decontamination" / "matches.parquet")
    write_validation(run / "validation")
    publish = {"version_dir": "/data/published/v0003", "version": 3, "parent": 2, "added": ["k1", "k2"],
               "removed": ["old-9"], "score_shifts": [{"id": "k3", "old": 2.5, "new": 4.0}]}
    (run / "publish.json").write_text(json.dumps(publish))
    write_training(run / "train")


def write_training(folder: Path) -> None:
    """train/summary.json as training/candidates.py writes it: two candidates, one with a GGUF check."""
    categories = ["truncated", "empty", "repetitive", "refusal", "wrong_language", "misspelled"]

    def errors(tuned_repetitive: int) -> dict:
        def side(repetitive: int) -> dict:
            example = {"prompt": "Tell me about Rust.", "answer": f"Rust Rust Rust {IMG}", "why": "0.60 of word chars"}
            return {
                "answers": 3,
                "counts": {c: repetitive if c == "repetitive" else 0 for c in categories},
                "examples": {c: [example] * repetitive if c == "repetitive" else [] for c in categories},
            }

        return {"categories": categories, "word_list": "pyspellchecker's English word list",
                "base": side(2), "tuned": side(tuned_repetitive)}

    def candidate(name: str, loss: float, win: float | None, gguf: dict | None = None) -> dict:
        verdicts = {"win": 2, "tie": 0, "loss": 1, "unjudged": 0} if win is not None else None
        stages = {"sft": {"stage": "sft", "steps": 3, "train_loss": 1.9, "eval_loss": 2.0, "tokens_per_second": None,
                          "train_rows": 168, "dropped_rows": 85 if gguf else 0, "resumed_from": None,
                          "adapter_dir": f"/runs/x/train/{name}/sft/adapter", "merged_dir": None}}
        return {
            "name": name, "fingerprint": "0123456789abcdef", "method": "sft",
            "adapter_dir": f"/runs/x/train/{name}/sft/adapter", "stages": stages,
            "seconds": {"stages": 9.5, "evaluate": 2.0, "judge": 1.5},
            "metrics": {"eval_loss": loss, "rouge_l": 0.31, "bertscore": 0.55, "win_rate": win},
            "base_metrics": {"eval_loss": 2.9, "rouge_l": 0.2, "bertscore": 0.5},
            "win_rate": None if win is None else {
                "judges": ["judge-1"], "prompts": 3, **verdicts, "win_rate": win, "ci95": [0.2, 0.9],
                "order_consistent": 0.667, "first_shown_wins": 0.5, "mean_words": {"base": 12.0, "tuned": 30.5},
            },
            "errors": errors(0 if win else 1), "gguf": gguf,
        }

    gguf = {"file": "/runs/x/train/tuned/sft/model-f16.gguf", "type": "f16", "bytes": 5_000_000, "prompts": 3,
            "identical_generations": 3, "token_agreement": 1.0, "max_logit_diff": 0.0003, "max_weight_diff": 0.0}
    board = [{"rank": 1, "name": "tuned", "eval_loss": 1.8, "rouge_l": 0.31, "bertscore": 0.55, "win_rate": 0.667},
             {"rank": 2, "name": "control", "eval_loss": 2.9, "rouge_l": 0.31, "bertscore": 0.55, "win_rate": None}]
    summary = {"select_by": ["eval_loss", "win_rate"], "best": "tuned", "leaderboard": board,
               "candidates": {"control": candidate("control", 2.9, None), "tuned": candidate("tuned", 1.8, 0.667, gguf)}}
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(summary))


def stage(name: str, rows_in: int, out: int, reasons: dict[str, int], **extra: object) -> dict:
    removed = sum(reasons.values())
    return {"stage": name, "in": rows_in, "out": out, "removed": removed, "removed_by_reason": reasons, "seconds": 0.5, **extra}


def stats(kept: int, rejected: int) -> dict:
    usage = {"requests": 8, "failures": 0, "cached": 0, "prompt_tokens": 2400, "completion_tokens": 80,
             "cost_usd": 0.0006, "by_error": {}}
    stages = [
        stage("ingest", 16, 15, {"bad_json": 1}, rows_read=16, control_chars_removed=0, files=[
            {"path": "data/alpaca.jsonl.gz", "format": "jsonl", "compression": "gzip", "encoding": "utf-8", "shape": "alpaca",
             "rows_read": 13, "records": 13, "rejected": 0, "removed_by_reason": {}, "missing_columns": []},
            {"path": BAD_FILE, "format": "jsonl", "compression": None, "encoding": "ascii", "shape": "mixed: text 2, alpaca 1",
             "rows_read": 3, "records": 2, "rejected": 1, "removed_by_reason": {"bad_json": 1}, "missing_columns": []},
        ], skipped_files=["data/README.md", "data/LICENSE"]),
        stage("pii", 15, 15, {}, action="redact", records_with_pii=1, found={"email": 1}),
        stage("synthesis", 15, 17, {}, documents=3, chunks=2, generated=2, failed_chunks=0, generator="local:smollm2",
              usage=usage),
        stage("filters", 17, 15, {"too_few_words": 1, "excluded_keyword": 1}, languages={"en": 15, "de": 1, "uncertain": 1}),
        stage("decontamination", 15, 14, {"benchmark_overlap": 1}, ngram=13, min_coverage=0.5,
              benchmarks={"gsm8k_test": {"items": 1319, "texts": 2638, "too_short": 0, "benchmark_overlap": 1,
                                         "benchmark_paraphrase": 0}}),
        stage("dedup_exact", 14, 12, {"exact_duplicate": 2}, siblings_protected=1),
        stage("dedup_minhash", 12, 11, {"near_duplicate": 1}, bands=9, rows=13, candidate_pairs=3, confirmed_pairs=1,
              siblings_protected=0),
        stage("jury", 11, 10, {"low_jury_score": 1}, judges=JUDGES, rated=8, unscored=0, agreement_alpha=0.612,
              mean_spread=0.875, histogram={"1": 0, "2": 1, "3": 2, "4": 4, "5": 1, "unscored": 0},
              usage={j: {"model": "endpoint:gpt-4o-mini", **usage} for j in JUDGES}, estimated_cost_usd=0.0013,
              distill={"sample": 6, "n_train": 4, "n_holdout": 2, "spearman": 0.8, "mae": 0.41,
                       "accuracy_at_min_score": 1.0, "ridge_alpha": 10.0,
                       "warning": "hold-out of 2 records: its Spearman is uncertain by about +-1.00"}),
        stage("preference", 10, 11, {}, prompts=1, candidates=2, generated=1, no_pair_by_reason={"tie": 3, "unscored": 1},
              chosen_is_longer=1.0, failed_generations=0),
        stage("export", 11, 11, {}, chat_template="chatml", tokenizer="bundled/SmolLM2-135M-Instruct", max_seq_length=256,
              overlength="truncate", special_tokens={"action": "reject", "records": 0, "escaped": 0},
              files={"sharegpt.json": {"rows": 7, "skipped": 0, "system_column": False}},
              splits={"sft": {"train": 6, "test": 1}, "preference": {"train": 1, "test": 0}}, not_exported={"raw": 3},
              tokens={"sft": {"count": 7, "min": 20, "mean": 150.0, "p50": 120, "p95": 600, "max": 600,
                              "over_max_seq_length": 2, "dropped_too_long": 0, "kept_for_truncation": 2,
                              "histogram": {"bin_width": 32, "counts": [0, 1, 2, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]}},
                      "preference": {"count": 1, "min": 90, "mean": 90.0, "p50": 90, "p95": 90, "max": 90,
                                     "over_max_seq_length": 0, "dropped_too_long": 0, "kept_for_truncation": 0,
                                     "histogram": {"bin_width": 32, "counts": [0, 0, 1] + [0] * 14}}}),
    ]
    return {
        "config": "configs/report.yaml",
        "stages": stages,
        "totals": {"ingested": 16, "generated": 3, "kept": kept, "rejected": rejected,
                   "removed_by_stage": {s["stage"]: s["removed"] for s in stages}},
        "invariant": {"rule": "ingested + generated == kept + rejected", "holds": 16 + 3 == kept + rejected},
        "seconds": 12.5,
    }


def write_ratings(folder: Path) -> None:
    rows = [
        {"id": rid, "judge": judge, "score": score, "method": "json",
         "error": None if score is not None else "unparsable", "raw": f'{{"score": {score}}}' if score else "great <b>answer</b>",
         "attempts": 1 if score is not None else 3}
        for rid, scores in SCORES.items()
        for judge, score in zip(JUDGES, scores, strict=True)
    ]
    folder.mkdir()
    schema = {"id": pl.String, "judge": pl.String, "score": pl.Float64, "method": pl.String,
              "error": pl.String, "raw": pl.String, "attempts": pl.Int64}
    pl.DataFrame(rows, schema=schema).write_parquet(folder / "ratings.parquet")


def write_validation(folder: Path) -> None:
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "index.html").write_text("<html><body>Data Docs</body></html>")
    suites = [
        {"name": "kept_records", "severity": "fail", "success": True, "expectations": 12, "failed": [],
         "data_docs": "validation/docs/index.html"},
        {"name": "export_sets", "severity": "warn", "success": False, "expectations": 5,
         "failed": [{"expectation": "expect_column_value_lengths_to_be_between", "column": "text",
                     "details": "2 of 11 values <b>outside</b> [1, 4000]"}],
         "data_docs": "https://example.com/docs/index.html"},  # not relative: must not become a link
        {"name": "preference", "severity": "fail", "success": True, "expectations": 0, "failed": [],
         "data_docs": "validation/docs/index.html", "note": "no preference records: suite skipped"},
    ]
    (folder / "summary.json").write_text(json.dumps({"suites": suites}))


# --- rendering ----------------------------------------------------------------------------------


def chromium_binary() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        skip_or_fail("chromium not installed (scripts/test.sh installs it: apt-get install -y chromium)")
    return binary


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}",
    ]
    try:
        return subprocess.run(
            [chromium_binary(), *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=45, check=True
        )
    except subprocess.TimeoutExpired:
        # A modal alert() from unescaped data blocks headless Chromium until it is killed.
        pytest.fail(f"chromium did not finish rendering {page.name}: did a script from the data open a dialog?")


def dump_dom(page: Path, tmp: Path) -> str:
    return chromium(page, tmp, "--virtual-time-budget=2000", "--dump-dom").stdout


class Elements(HTMLParser):
    """Every start tag as (tag, attrs, id of the enclosing <section>)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None], str | None]] = []
        self.section: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.section = values.get("id")
        self.found.append((tag, values, self.section))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("report")
    build_run(tmp / "run")
    page = write_report(tmp / "run")
    shot = tmp / "shot.png"
    chromium(page, tmp, "--window-size=1280,2400", f"--screenshot={shot}")
    return {"page": page, "html": page.read_text(encoding="utf-8"), "dom": dump_dom(page, tmp), "shot": shot}


# --- tests --------------------------------------------------------------------------------------


def test_report_written_into_the_run_directory(rendered: dict) -> None:
    assert rendered["page"].name == "report.html" and rendered["page"].parent.name == "run"
    assert rendered["page"].stat().st_size < 200_000


def test_every_section_is_in_the_rendered_dom(rendered: dict) -> None:
    sections = {a.get("id") for tag, a, _ in Elements(rendered["dom"]).found if tag == "section"}
    assert set(SECTIONS) <= sections
    assert "not in this run" not in rendered["dom"]  # every part of this run directory is there


def test_no_external_references(rendered: dict) -> None:
    for tag, attrs, _ in Elements(rendered["html"]).found:
        for name in ("src", "href", "xlink:href", "action", "poster", "srcset"):
            value = attrs.get(name)
            if value is not None:
                assert (
                    not re.match(r"^\s*([a-z][a-z0-9+.-]*:|//)", value, re.IGNORECASE) or value.startswith("data:")
                ), (tag, name, value)
    assert "@import" not in rendered["html"] and not re.search(r"url\(\s*['\"]?(https?:)?//", rendered["html"])
    assert re.search(r"<link\b", rendered["html"]) is None


def test_text_from_the_data_is_shown_never_run(rendered: dict) -> None:
    dom = rendered["dom"]
    tags = Elements(dom).found
    assert not [t for t in tags if t[0] == "script"], "no script element may reach the DOM"
    assert not [t for t in tags if t[0] == "img"]
    assert re.search(r"<title>\s*" + re.escape(TITLE) + r"\s*</title>", dom), "the page title was changed"
    body = next(attrs for tag, attrs, _ in tags if tag == "body")
    assert "data-pwned" not in body
    # The payloads are visible as text (escaped in the serialised DOM).
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=" in dom
    assert "great &lt;b&gt;answer&lt;/b&gt;" in dom  # a judge's raw answer
    assert "values &lt;b&gt;outside&lt;/b&gt;" in dom  # a validation detail


def test_charts_drew_bars_in_every_charted_section(rendered: dict) -> None:
    bars: dict[str, int] = {}
    for tag, attrs, section in Elements(rendered["dom"]).found:
        if tag == "rect" and float(attrs.get("width") or 0) > 0 and float(attrs.get("height") or 0) > 0:
            bars[section or ""] = bars.get(section or "", 0) + 1
    for section in CHARTED:
        assert bars.get(section, 0) >= 2, f"no chart bars drawn in #{section}"


def test_screenshot_shows_the_page_and_its_charts(rendered: dict) -> None:
    image = Image.open(rendered["shot"]).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3)
    assert (pixels.min(axis=1) < 200).mean() > 0.02, "the screenshot is (nearly) blank"
    packed = pixels.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    wanted = [r << 16 | g << 8 | b for r, g, b in (KEPT_BLUE, REMOVED_RED, LENGTH_PURPLE)]
    assert np.isin(wanted, packed).all(), "funnel or length chart bars were not painted"


def test_report_content(rendered: dict) -> None:
    dom = rendered["dom"]
    assert 'id="invariant" data-holds="true"' in dom
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    for shown in (
        "data/alpaca.jsonl 5 6 45.5%",  # per source: kept, rejected, kept share
        "data/raw.jsonl (synthesis) 2 0",
        "data/bad&lt;script&gt;alert(2)&lt;/script&gt;.jsonl 0 1",
        "(preference pairs) 1 0",
        "too_few_words",
        "2 words &lt; 3",  # a removal detail
        "cluster of 3",  # a1 and its two exact duplicates
        "never removed as duplicates): dedup_exact: 1; dedup_minhash: 0.",  # preference siblings per stage
        "0.612",  # Krippendorff's alpha
        "accuracy_at_min_score 1",  # distillation agreement
        "hold-out of 2 records: its Spearman is uncertain",  # and its warning
        "unparsable",  # a failed rating
        # Per input file as ingest read it, and what a directory input left out.
        "data/alpaca.jsonl.gz jsonl (gzip, utf-8) alpaca 13 13 0 0.0%",
        "mixed: text 2, alpaca 1 3 2 1 33.3% bad_json: 1",
        "Skipped in directory inputs",
        "data/README.md, data/LICENSE",
        # Kept, split into what training gets and what it does not.
        "8 in the exported sets (sft: 7 · preference: 1)",
        "3 kept but in no exported set (raw: 3)",
        # Token lengths with the training tokenizer, the share over max_seq_length and what is cut.
        "sft: 28.6% over max_seq_length 256",
        "tokenizer bundled/SmolLM2-135M-Instruct",
        "cuts the end of the answer",
        # Stage figures as rows of a table, not JSON.
        "no_pair_by_reason.tie 3",
        "splits.sft.train 6",
        "files.sharegpt.json.rows 7",
        "gsm8k_test 1,319 2,638 0 1 0",  # contamination per benchmark
        "bench/gsm8k_test.jsonl:1 · user turn 1 Janet",  # the item beside the record
        "1 of 15 records held PII (redact); found: email 1",
        "de 1 5.9%",  # the language mix
        # Training: the leaderboard, win-rate against the base, error analysis, GGUF check.
        "ranked by eval_loss, then win_rate ; best: tuned",
        "1 tuned 1.8 0.31 0.55 0.667",  # the leaderboard
        "on 3 held-out prompts: 0.667 (95% Wilson interval 0.2 – 0.9); win 2 · tie 0 · loss 1",
        "mean words: base 12, tuned 30.5",
        "repetitive 2 0",  # error analysis: base vs tuned counts
        "3 of 3 greedy generations identical",
        # Per stage the train rows it got, and those left out for max_seq_length.
        "Trained: sft 3 steps on 168 train rows.",
        "Trained: sft 3 steps on 83 of 168 train rows ( 85 left out : too long for train.max_seq_length).",
    ):
        assert shown in text, shown
    funnel = dom[dom.index('id="funnel"'):dom.index('id="reasons"')]
    assert '{"' not in funnel and "&quot;" not in funnel  # no JSON blobs in the details
    # The token chart marks the bins past max_seq_length in the removed colour.
    tokens = dom[dom.index('id="tokens-sft"'):dom.index('id="tokens-preference"')]
    assert tokens.count("c-removed") == 9 and "c-length" in tokens
    links = [a["href"] for tag, a, s in Elements(dom).found if tag == "a" and s == "validation"]
    assert links == ["validation/docs/index.html"] * 2
    assert "suite skipped" in text
    assert (rendered["page"].parent / links[0]).is_file()


def test_a_run_with_only_stats_json_renders(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    summary = stats(11, 8)
    summary["stages"] = [s for s in summary["stages"] if s["stage"] != "jury"]
    (run / "stats.json").write_text(json.dumps(summary))
    dom = dump_dom(write_report(run), tmp_path)
    found = Elements(dom).found
    assert set(SECTIONS) <= {a.get("id") for tag, a, _ in found if tag == "section"}
    missing = {s for tag, a, s in found if tag == "p" and "missing" in (a.get("class") or "")}
    assert {"lengths", "duplicates", "jury", "sources", "validation", "training"} <= missing
    assert any(tag == "rect" and s == "funnel" for tag, _, s in found)  # stats.json alone draws the funnel


def test_stats_json_is_required(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path)


def test_length_histogram_bins() -> None:
    values = np.array([*range(100), 5000])
    bars = histogram(values, bins=10)
    assert sum(count for _, _, count in bars) == len(values)
    assert bars[0][1] == "0-9 words" and bars[-1][0].startswith("≥")  # the tail bin
    assert histogram(np.array([1, 2, 3]), bins=10) == [(str(i), f"{i} words", float(i > 0)) for i in range(4)]


@pytest.mark.parametrize(
    ("inputs", "unwritten"),
    [
        (["sft/gsm8k_test.jsonl"], {"preference"}),  # sft only, default formats: no preference set
        (["raw"], {"sft", "preference"}),  # raw text with `export:`: neither set
    ],
)
def test_a_run_whose_exported_sets_are_empty_reports(
    inputs: list[str], unwritten: set[str], public_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A set export did not write is a count of 0 with its reason, for the report, `curate report`
    and the CLI's summary, never a string where a number goes."""
    from curation.core.inputs import load_config
    from curation.core.run import run_pipeline
    from curation.report.console import funnel
    from flows.cli import main

    (tmp_path / "raw.jsonl").write_text('{"text": "A plain document that no export format takes."}\n')
    lines = (public_data / "sft" / "gsm8k_test.jsonl").read_text().splitlines()[:3]
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "gsm8k_test.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "config.yaml"
    config.write_text("inputs: [" + ", ".join(f"{{path: {p}.jsonl}}" if p == "raw" else f"{{path: {p}}}" for p in inputs)
                      + "]\nexport: {}\n")
    run = tmp_path / "run"
    stats = run_pipeline(load_config(config), run)
    assert main(["report", str(run)]) == 0
    text = (run / "report.html").read_text()
    for kind in unwritten:
        assert f"hf/{kind} not written: no rows: no {kind} records reached export" in text
        assert not (run / "export" / "hf" / kind).exists()
    printed = funnel(stats.model_dump(by_alias=True), run)
    assert "export/hf/preference: not written (no rows: no preference records reached export)" in printed
    if "sft" not in unwritten:
        assert "export/hf/sft: 2 train, 1 test" in printed and "(preference: 0 · sft: 3)" in text


def test_removal_examples_are_a_seeded_random_sample(tmp_path: Path) -> None:
    """Not the first rows of a reason (often one file's, one shape's): a random sample, the
    same each time the run's report is written."""
    from curation.report.html import MAX_EXAMPLES, _reason_examples

    rows = [{**sft(f"r{i:02d}", i, "Hi", "Ok."), "stage": "filters", "reason": "too_few_words", "detail": "2 words < 3"}
            for i in range(40)]
    rejects_frame(rows).write_parquet(tmp_path / "rejected.parquet")
    picked = [[e["id"] for e in _reason_examples(pl.scan_parquet(tmp_path / "rejected.parquet"))[("filters", "too_few_words")]]
              for _ in range(2)]
    assert picked[0] == picked[1] and len(set(picked[0])) == MAX_EXAMPLES
    assert picked[0] != [f"r{i:02d}" for i in range(MAX_EXAMPLES)]


def test_the_pii_section_shows_records_it_changed_around_the_placeholder(tmp_path: Path) -> None:
    from curation.core.stats import RunStats
    from curation.report import hygiene

    prose = "A long answer about the weather and the harbour, nothing private in it at all. " * 8
    kept = [sft(f"c{i}", i, "Plain question?", prose) for i in range(12)]
    kept += [sft("mail", 20, "Who do I write to?", prose + "Write to <EMAIL> for the form."),
             raw("phone", 21, "Call <PHONE> before noon. " + prose)]
    records_frame(kept).write_parquet(tmp_path / "kept.parquet")
    found = hygiene.pii(RunStats.model_validate(stats(14, 0)), pl.scan_parquet(tmp_path / "kept.parquet"))
    assert found is not None
    changed = {e["id"]: e["excerpt"] for e in found["changed"]}
    assert sorted(changed) == ["mail", "phone"]
    assert changed["mail"].startswith("… ") and "Write to <EMAIL> for the form." in changed["mail"]
    assert changed["phone"].startswith("Call <PHONE> before noon.")


def test_the_figures_shown_in_their_own_sections_are_fields_of_their_models() -> None:
    """The funnel leaves these out of a stage's details; a renamed figure must not reappear there."""
    from curation.report.html import OWN_SECTION

    for model, names in OWN_SECTION.items():
        assert names <= set(model.model_fields), model
