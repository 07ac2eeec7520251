"""Agreement of the local rubric judges (bundled SmolLM2-135M-Instruct) with human preferences.

    cd /work/main && .venv/bin/python -m bench.bench_jury_agreement [--rubrics a,b] [--jury name=a+b+c]

Pairs of answers to the same prompt where humans preferred one:
- orca: the first --orca-pairs rows of ../shared/data/pref/orca_dpo_pairs_validation_283.jsonl
  (input.messages, preferred_output, non_preferred_output; GPT-4 vs Llama-2-chat answers);
- oasst: ../shared/data/sft/oasst_en_100_tree.jsonl, for each prompt node (walked depth-first in
  file order) with ranked sibling assistant replies, the best (rank 0) vs the worst-ranked
  sibling, one pair per prompt node, the first --oasst-pairs of them.
Each answer is rated alone (pointwise, G-Eval: the probability-weighted 1..5 rating from the
log-probs of the first answer token). Agreement = the share of pairs where the preferred
answer scores higher; a tie counts 0.5 (ties are also reported; an unrated answer makes a tie).
A jury is the mean of its judges' scores. "pairwise" shows both answers in one prompt
(rubrics/pairwise.jinja), in both orders (curation.preference.pairwise): it agrees when both orders
prefer the human's choice, disagrees when both prefer the other, and a verdict that flips with
the order is a tie; its s/rating is per comparison (two requests). "longer" is the baseline that prefers the longer
answer (no model). Rubrics were chosen on orca only; oasst is the held-out check.

Answers are cached in bench/results/cache (CachedModel, SQLite), so a re-run only rates what
is new. s/rating is timed apart, without the cache: --time-sample items spread evenly over each
dataset, rated fresh by every rubric (wall seconds per rating, batch size as configured; the
machine is shared: see the load average). A jury's s/rating is the sum of its judges'. Writes
bench/results/jury_agreement.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from curation.jury.judge import JudgeItem, RubricJudge, load_rubric, render_conversation
from curation.llm.cache import AnswerCache, CachedModel
from curation.llm.local import LocalModel
from curation.llm.types import ChatModel
from curation.preference.pairwise import PairwiseJudge, position_stats
from schemas.jury import Local

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "cache"
SHARED = REPO.parent / "shared" / "data"
ORCA = SHARED / "pref" / "orca_dpo_pairs_validation_283.jsonl"
OASST = SHARED / "sft" / "oasst_en_100_tree.jsonl"

DEFAULT_RUBRICS = "geval_plain,helpfulness,correctness,clarity,instruction_following,overall"
DEFAULT_JURIES = ["jury=overall+correctness+instruction_following"]

Pair = tuple[str, str, str]  # prompt, preferred answer, other answer


def orca_pairs(n: int) -> list[Pair]:
    pairs = []
    with ORCA.open() as f:
        for line in f:
            row = json.loads(line)
            pairs.append(
                (
                    render_conversation(row["input"]["messages"]),
                    row["preferred_output"][-1]["content"],
                    row["non_preferred_output"][-1]["content"],
                )
            )
            if len(pairs) == n:
                break
    return pairs


def oasst_pairs(n: int) -> list[Pair]:
    pairs: list[Pair] = []

    def walk(node: dict, path: list[dict]) -> None:
        role = "user" if node["role"] == "prompter" else "assistant"
        path = path + [{"role": role, "content": node["text"]}]
        if role == "user":
            ranked = [
                r
                for r in node.get("replies", [])
                if r["role"] == "assistant" and r.get("rank") is not None and not r.get("deleted")
            ]
            if len(ranked) >= 2:
                best = min(ranked, key=lambda r: r["rank"])
                worst = max(ranked, key=lambda r: r["rank"])
                if best["rank"] != worst["rank"]:
                    pairs.append((render_conversation(path), best["text"], worst["text"]))
        for reply in node.get("replies", []):
            walk(reply, path)

    with OASST.open() as f:
        for line in f:
            walk(json.loads(line)["prompt"], [])
    return pairs[:n]


def agreement(preferred: list[float | None], other: list[float | None]) -> dict:
    wins = ties = failed = 0
    for a, b in zip(preferred, other, strict=True):
        if a is None or b is None:
            failed += 1
            ties += 1
        elif a > b:
            wins += 1
        elif a == b:
            ties += 1
    n = len(preferred)
    return {"agreement": (wins + 0.5 * ties) / n, "wins": wins, "ties": ties, "unrated_pairs": failed, "pairs": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rubrics", default=DEFAULT_RUBRICS, help="comma-separated bundled names or paths")
    parser.add_argument(
        "--jury", action="append", default=None, help="NAME=r1+r2+...: mean of those rubrics (repeatable)"
    )
    parser.add_argument("--pairwise", default="pairwise", help="comparison rubric ('' = skip)")
    parser.add_argument("--datasets", default="orca,oasst")
    parser.add_argument("--orca-pairs", type=int, default=120)
    parser.add_argument("--oasst-pairs", type=int, default=120)
    parser.add_argument("--model", default=None, help="local model directory; default: bundled SmolLM2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--max-chars", type=int, default=6000)
    parser.add_argument("--time-sample", type=int, default=16, help="uncached items per rubric and dataset")
    parser.add_argument("--out", default=str(RESULTS / "jury_agreement.json"))
    args = parser.parse_args()

    rubrics = [r for r in args.rubrics.split(",") if r]
    juries = {}
    for spec in args.jury if args.jury is not None else DEFAULT_JURIES:
        name, _, members = spec.partition("=")
        juries[name] = members.split("+")
        rubrics += [m for m in juries[name] if m not in rubrics]
    data = {"orca": orca_pairs(args.orca_pairs), "oasst": oasst_pairs(args.oasst_pairs)}
    datasets = [d for d in args.datasets.split(",") if d]

    local = LocalModel(Local(path=args.model, batch_size=args.batch_size, max_length=args.max_length))
    cache = AnswerCache(CACHE)
    model: ChatModel = CachedModel(local, cache)
    load_before = [round(x, 2) for x in os.getloadavg()]

    scores: dict[str, dict[str, tuple[list, list]]] = {}
    results: dict[str, dict] = {}
    for rubric in rubrics:
        text = load_rubric(rubric)
        judge = RubricJudge(rubric, model, text, max_chars=args.max_chars)
        results[rubric] = {"template_sha256": judge.template_hash}
        for ds in datasets:
            pairs = data[ds]
            items = [JudgeItem(p, a) for p, a, _ in pairs] + [JudgeItem(p, b) for p, _, b in pairs]
            ratings = judge.rate(items, progress=f"{rubric} / {ds}")
            values = [r.score for r in ratings]
            n = len(pairs)
            scores.setdefault(rubric, {})[ds] = (values[:n], values[n:])
            results[rubric][ds] = {
                **agreement(values[:n], values[n:]),
                "methods": {str(m): sum(r.method == m for r in ratings) for m in ("logprobs", "json", "text", None)},
                "mean_score": statistics.fmean(v for v in values if v is not None) if any(values) else None,
            }
    # Timing, uncached: the same evenly spread items for every rubric.
    timing: dict[str, dict] = {}
    for rubric in rubrics if args.time_sample else []:
        fresh = RubricJudge(rubric, local, load_rubric(rubric), max_chars=args.max_chars)
        seconds, count, tokens = 0.0, 0, 0
        for ds in datasets:
            pairs = data[ds]
            items = [JudgeItem(p, a) for p, a, _ in pairs] + [JudgeItem(p, b) for p, _, b in pairs]
            step = max(1, len(items) // args.time_sample)
            sample = items[::step][: args.time_sample]
            before = local.usage.prompt_tokens
            start = time.perf_counter()
            fresh.rate(sample)
            seconds += time.perf_counter() - start
            count += len(sample)
            tokens += local.usage.prompt_tokens - before
        timing[rubric] = {"seconds": seconds, "ratings": count, "mean_prompt_tokens": tokens / count}
        results[rubric]["s_per_rating"] = seconds / count
        results[rubric]["timing"] = timing[rubric]

    for name, members in juries.items():
        results[name] = {"members": members}
        for ds in datasets:
            pref = [_mean(s) for s in zip(*(scores[m][ds][0] for m in members), strict=True)]
            other = [_mean(s) for s in zip(*(scores[m][ds][1] for m in members), strict=True)]
            results[name][ds] = agreement(pref, other)
        per = [results[m].get("s_per_rating") for m in members]
        results[name]["s_per_rating"] = sum(per) if all(p is not None for p in per) else None

    if args.pairwise:
        results["pairwise"] = _pairwise(args, model, local, data, datasets)

    results["longer"] = {"s_per_rating": 0.0}
    for ds in datasets:
        pairs = data[ds]
        results["longer"][ds] = agreement([float(len(a)) for _, a, _ in pairs], [float(len(b)) for _, _, b in pairs])

    out = {
        "model": local.identity,
        "datasets": {ds: len(data[ds]) for ds in datasets},
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "usage": vars(local.usage),
        "time_sample": args.time_sample,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(_table(out, datasets))
    print(f"\nwritten {args.out}")


def _pairwise(args: argparse.Namespace, model: ChatModel, local: LocalModel, data: dict, datasets: list[str]) -> dict:
    rubric = load_rubric(args.pairwise)
    judge = PairwiseJudge("pairwise", model, rubric, max_chars=args.max_chars)
    result: dict = {}
    for ds in datasets:
        found = judge.compare(data[ds], progress=f"pairwise / {ds}")
        verdicts = [c.verdict for c in found]
        result[ds] = {
            "agreement": (verdicts.count("a") + 0.5 * verdicts.count("tie")) / len(found),
            "wins": verdicts.count("a"),
            "ties": verdicts.count("tie"),
            "losses": verdicts.count("b"),
            "pairs": len(found),
            **position_stats(found),
        }
    if args.time_sample:
        fresh = PairwiseJudge("pairwise", local, rubric, max_chars=args.max_chars)
        seconds, count = 0.0, 0
        for ds in datasets:
            sample = data[ds][:: max(1, len(data[ds]) // args.time_sample)][: args.time_sample // 2]
            start = time.perf_counter()
            fresh.compare(sample)
            seconds += time.perf_counter() - start
            count += len(sample)
        result["s_per_rating"] = seconds / count
    return result


def _mean(values: tuple) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _table(out: dict, datasets: list[str]) -> str:
    head = "| judge | " + " | ".join(f"{ds} agreement | {ds} ties" for ds in datasets) + " | s/rating |"
    rows = [head, "|---|" + "---:|---:|" * len(datasets) + "---:|"]
    for name, r in out["results"].items():
        cells = []
        for ds in datasets:
            cells.append(f"{r[ds]['agreement']:.3f} | {r[ds]['ties']}")
        spr = r.get("s_per_rating")
        members = f" ({'+'.join(r['members'])})" if "members" in r else ""
        rows.append(f"| {name}{members} | " + " | ".join(cells) + f" | {'-' if spr is None else f'{spr:.2f}'} |")
    pairs = ", ".join(f"{ds}: {n} pairs" for ds, n in out["datasets"].items())
    rows.append(f"\n{pairs}; load average {out['loadavg_before']} -> {out['loadavg_after']}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
