"""Decision benchmark (issue 24): precision and recall of every default removal rule on
labelled public data (bench/decisions/*.jsonl, built by bench/build_decisions.py).

    .venv/bin/python -m bench.bench_decisions [--sets NAME ...] [--baseline FILE] [--save-baseline]

Each set is run the way a user configures the rule: its items are written as input files
(Alpaca JSONL for prompt/answer items, JSONL text for documents, one .txt file per Markdown
document for the paragraph split), read by the project's ingest and judged by the project's
stage (filters or pii) with the config below. An item labelled `remove` must be removed (PII:
its planted string redacted), one labelled `keep` must come through unchanged. Prints per set
the items on each side, precision, recall and the share of `keep` items (near misses) removed,
then the same per group (language, phone format, kind of near miss); writes everything to
bench/results/decisions.json. With a baseline (default bench/decisions/baseline.json, today's
figures) the table shows before and after side by side. Offline; ~1-2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DECISIONS = ROOT / "decisions"
RESULTS = ROOT / "results"
BASELINE = DECISIONS / "baseline.json"

# The config a user writes for each rule (issue 24's table), the reason its items are labelled
# with, and the reject reasons that count as the rule removing an item.
SETS: dict[str, dict] = {
    "keywords_refusals": {"filters": {"keywords": {"refusals": True}}, "reason": "excluded_keyword",
                          "reasons": ["excluded_keyword"]},
    "format_json": {"filters": {"format": {"json": True}}, "reason": "invalid_json", "reasons": ["invalid_json"]},
    "repetition": {"filters": {"repetition": {}}, "reason": "repetition",
                   "reasons": ["repeated_lines", "repeated_ngrams"]},
    "language": {"filters": {"language": {"keep": ["en"]}}, "reason": "wrong_language", "reasons": ["wrong_language"]},
    "length_cjk": {"filters": {"length": {"min_words": 3}}, "reason": "too_few_words", "reasons": ["too_few_words"]},
    "markdown_fences": {"filters": {"format": {"code": True}}, "txt_split": "paragraph",
                        "reason": "unbalanced_code_fence", "reasons": ["unbalanced_code_fence", "unparsable_code"]},
    "pii": {"pii": {"action": "redact"}, "reason": "pii", "reasons": ["pii"]},
    # On by default in every filters section: named here so it is measured (see judge).
    "placeholders": {"filters": {"placeholders": {}}, "reason": "placeholders",
                     "reasons": ["placeholder_answer", "leaked_template"]},
    "truncated": {"filters": {"truncated": {}}, "reason": "truncated_answer", "reasons": ["truncated_answer"]},
}
LABELS = ("remove", "keep")
FIELDS = {"id", "rule", "reason", "label", "group", "origin"}


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DECISIONS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def _inputs(items: list[dict], folder: Path, txt_split: str | None) -> tuple[list, dict[str, str]]:
    """Input specs for the items and a map from each record source to its item id."""
    from schemas.config import InputSpec

    specs, where = [], {}
    if txt_split:
        docs = folder / "docs"
        docs.mkdir()
        for it in items:
            (docs / f"{it['id']}.txt").write_text(it["text"], encoding="utf-8")
            where[f"docs/{it['id']}.txt"] = it["id"]
        return [InputSpec(path=str(docs), format="txt", txt_split=txt_split)], where
    sft = [it for it in items if "answer" in it]
    raw = [it for it in items if "text" in it]
    for name, rows, shape, row in (
        ("sft.jsonl", sft, "alpaca", lambda it: {"instruction": it["prompt"], "input": "", "output": it["answer"]}),
        ("raw.jsonl", raw, "text", lambda it: {"text": it["text"]}),
    ):
        if rows:
            with (folder / name).open("w", encoding="utf-8") as f:
                for line, it in enumerate(rows, 1):
                    f.write(json.dumps(row(it), ensure_ascii=False) + "\n")
                    where[f"{name}:{line}"] = it["id"]
            specs.append(InputSpec(path=str(folder / name), format="jsonl", shape=shape))
    return specs, where


def _item_of(source: str, where: dict[str, str]) -> str:
    """The item id of a record source (`file:line`; a paragraph's file for the split docs)."""
    if source in where:
        return where[source]
    return where[source.rsplit(":", 1)[0]]


def judge(name: str, items: list[dict]) -> dict[str, dict]:
    """Run the rule on the items; per item id: removed (bool) and the reasons / what changed."""
    from bench.stage_output import frame
    from curation.filters.stage import build_filter_stage
    from curation.ingest.collect import ingest
    from curation.pii import build_pii_stage
    from schemas.config import Filters, PiiConfig

    spec = SETS[name]
    with tempfile.TemporaryDirectory(prefix=f"decisions-{name}-") as tmp:
        folder = Path(tmp)
        inputs, where = _inputs(items, folder, spec.get("txt_split"))
        read = ingest(inputs, progress=False, base=folder)
        if read.rejected.height:
            reasons = frame(read.rejected)["reason"].to_list()[:5]
            raise SystemExit(f"{name}: ingest rejected {read.rejected.height} rows: {reasons}")
        records = read.records
    outcome: dict[str, dict] = defaultdict(lambda: {"removed": False, "reasons": []})
    if "pii" in spec:
        result = build_pii_stage(PiiConfig(**spec["pii"]))(records)
        by_id = {it["id"]: it for it in items}
        for row in frame(result.kept).iter_rows(named=True):
            it = by_id[_item_of(row["source"], where)]
            outcome[it["id"]] = _pii_outcome(it, row["text"])
        return dict(outcome)
    # Each set measures its own rule: a check on by default in every filters section (placeholders)
    # is off unless the set names it.
    result = build_filter_stage(Filters(**{"placeholders": None, **spec["filters"]}))(records)
    for row in frame(result.rejected).select("source", "reason").iter_rows(named=True):
        if row["reason"] not in spec["reasons"]:
            raise SystemExit(f"{name}: unexpected reject reason {row['reason']!r} (expected {spec['reasons']})")
        got = outcome[_item_of(row["source"], where)]
        got["removed"] = True
        got["reasons"].append(row["reason"])
    return {it["id"]: outcome.get(it["id"], {"removed": False, "reasons": []}) for it in items}


def _pii_outcome(it: dict, redacted: str) -> dict:
    """A planted item counts as removed when its planted string is gone; a clean one when
    anything in it changed. `exact`: nothing but the planted string changed."""
    from curation.pii.detect import PLACEHOLDER

    if redacted == it["text"]:
        return {"removed": False, "reasons": [], "exact": it["label"] == "keep"}
    changed = [p for p in PLACEHOLDER.values() if p in redacted]
    if it["label"] == "remove":
        gone = it["planted"] not in redacted
        exact = gone and any(it["text"].replace(it["planted"], p) == redacted for p in PLACEHOLDER.values())
        return {"removed": gone, "reasons": changed, "exact": exact}
    return {"removed": True, "reasons": changed, "exact": False, "after": _first_change(it["text"], redacted)}


def _first_change(before: str, after: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), 0)
    return before[max(0, at - 30): at + 40]


def score(items: list[dict], outcome: dict[str, dict]) -> dict:
    n = Counter(it["label"] for it in items)
    removed = Counter(it["label"] for it in items if outcome[it["id"]]["removed"])
    tp, fp = removed["remove"], removed["keep"]
    groups: dict[str, dict] = {}
    for it in items:
        g = groups.setdefault(f"{it['label']}:{it['group']}", {"n": 0, "removed": 0})
        g["n"] += 1
        g["removed"] += outcome[it["id"]]["removed"]
    figures = {
        "n_remove": n["remove"], "n_keep": n["keep"],
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / n["remove"], 4) if n["remove"] else None,
        "near_misses_removed": round(fp / n["keep"], 4) if n["keep"] else None,
        "groups": {k: {**v, "share_removed": round(v["removed"] / v["n"], 4)} for k, v in sorted(groups.items())},
        "false_removals": [it["id"] for it in items if it["label"] == "keep" and outcome[it["id"]]["removed"]],
        "missed": [it["id"] for it in items if it["label"] == "remove" and not outcome[it["id"]]["removed"]],
    }
    exact = [outcome[it["id"]]["exact"] for it in items if it["label"] == "remove" and "exact" in outcome[it["id"]]]
    if exact:  # PII: planted strings replaced by one placeholder and nothing else changed
        figures["redacted_exactly"] = round(sum(exact) / len(exact), 4)
    return figures


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(results: dict, baseline: dict | None) -> str:
    head = "| set | rule (config) | n remove | n keep | precision | recall | near misses removed |"
    rows = [head, "|" + "---|" * 7]
    for name, r in results.items():
        before = (baseline or {}).get(name)
        cells = []
        for key in ("precision", "recall", "near_misses_removed"):
            now = _fmt(r[key])
            cells.append(f"{_fmt(before[key])} -> {now}" if before and before[key] != r[key] else now)
        config = json.dumps(SETS[name].get("filters") or SETS[name].get("pii"))
        if SETS[name].get("txt_split"):
            config = f"txt_split: {SETS[name]['txt_split']} + {config}"
        rows.append(f"| {name} | `{config}` | {r['n_remove']} | {r['n_keep']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def group_table(results: dict) -> str:
    rows = ["| set | side:group | n | removed | share removed |", "|---|---|---:|---:|---:|"]
    for name, r in results.items():
        for group, g in r["groups"].items():
            rows.append(f"| {name} | {group} | {g['n']} | {g['removed']} | {g['share_removed']:.3f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="*", choices=sorted(SETS), help="default: all")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="figures to compare with (before)")
    parser.add_argument("--save-baseline", action="store_true", help="write these figures as the new baseline")
    parser.add_argument("--groups", action="store_true", help="also print the per-group table")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    baseline = json.loads(args.baseline.read_text())["sets"] if args.baseline.is_file() else None
    results, seconds = {}, {}
    for name in args.sets or SETS:
        items = load(name)
        start = time.perf_counter()
        results[name] = score(items, judge(name, items))
        seconds[name] = round(time.perf_counter() - start, 1)
    print(table(results, baseline))
    if args.groups:
        print()
        print(group_table(results))
    RESULTS.mkdir(exist_ok=True)
    out = {"sets": results, "seconds": seconds}
    (RESULTS / "decisions.json").write_text(json.dumps(out, indent=1, ensure_ascii=False))
    if args.save_baseline:
        slim = {name: {k: v for k, v in r.items() if k not in ("false_removals", "missed")} for name, r in results.items()}
        args.baseline.write_text(json.dumps({"sets": slim}, indent=1, ensure_ascii=False) + "\n")
    print(f"\nwrote {RESULTS / 'decisions.json'} ({sum(seconds.values()):.0f} s)")


if __name__ == "__main__":
    main()
