"""Budgeted selection (issue 26) on ~52k Alpaca-sized records: what it adds to a curation run,
and which diversity method selects better.

    .venv/bin/python -m bench.bench_select [--models 65] [--budget 5000] [--skip-timing]

Data: alpaca_eval's model outputs (tatsu-lab/alpaca_eval, the mirror under /work/.mirror), 805
instructions answered by each of the first `--models` models (sorted by name) that have outputs in
the snapshot and an AlpacaEval 2 length-controlled win rate: 65 models = 52,325 Alpaca rows.

1. Timing: the streamed pipeline (`curate run`'s path) with the demo's filters, exact, MinHash
   and semantic dedup and export, without and with a `select:` section (record budget, no jury,
   so no score: id order; the default radius guard). Each configuration in a fresh process.
2. Quality: on the same records, each diversity method picks `--budget` records by a score of
   the answer's length percentile (per record: "long is more", Zhao et al. 2024) plus its model's
   win-rate percentile (a per-source quality label), weights 1 and 1. Reported: distinct
   instructions covered (of 805: the tasks), the most answers kept for one instruction, the
   alpaca_eval subsets covered, the mean win rate of the selected answers' models and the mean
   score. Writes bench/results/select_<n>.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_pipeline import CONFIG
from bench.measure import in_fresh_process

REPO = Path("/work/.mirror/tatsu-lab+alpaca_eval/repo")
LEADERBOARD = "src/alpaca_eval/leaderboards/data_AlpacaEval_2/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
RESULTS = Path(__file__).resolve().parent / "results"
# bench_pipeline's demo filters and dedup, with the semantic stage (select reuses its vectors) and export.
PIPELINE = {
    **CONFIG,
    "dedup": {**CONFIG["dedup"], "semantic": {"threshold": 0.9}},
    "export": {},
}
METHODS = [("none", {}), ("radius", {"radius": 0.9}), ("radius", {"radius": 0.8}), ("radius", {"radius": 0.7}),
           ("mmr", {"mmr_lambda": 0.7}), ("mmr", {"mmr_lambda": 0.5}), ("mmr", {"mmr_lambda": 0.3})]


def _git(*args: str) -> str:
    return subprocess.run(["git", f"--git-dir={REPO}", *args], check=True, capture_output=True, text=True).stdout


def load_rows(models: int) -> list[dict]:
    """alpaca_eval rows {instruction, output, dataset, model, win_rate} of the first `models` models."""
    board = csv.DictReader(io.StringIO(_git("show", f"HEAD:{LEADERBOARD}")))
    rates = {r[""]: float(r["length_controlled_winrate"]) for r in board if r["length_controlled_winrate"]}
    listing = _git("ls-tree", "-r", "--name-only", "HEAD", "results/").split()
    listing = sorted(p for p in listing if p.endswith("/model_outputs.json"))
    rows: list[dict] = []
    taken = 0
    for path in listing:
        model = path.split("/")[1]
        if model not in rates or taken == models:
            continue
        try:
            outputs = json.loads(_git("show", f"HEAD:{path}"))
        except (subprocess.CalledProcessError, ValueError):
            continue  # a file the snapshot lacks (too large)
        kept = [o for o in outputs if isinstance(o.get("output"), str) and o["output"].strip()]
        if len(kept) < 800:
            continue
        rows += [{"instruction": o["instruction"], "output": o["output"], "dataset": o.get("dataset"), "model": model,
                  "win_rate": rates[model]} for o in kept]
        taken += 1
    subset = {r["instruction"]: r["dataset"] for r in reversed(rows) if r["dataset"]}  # some files lack it
    return [dict(r, dataset=subset.get(r["instruction"], "unknown")) for r in rows]


def run_curation(path: str, select: dict | None) -> dict:
    from curation.core.run import run_pipeline
    from schemas.config import CurateConfig

    config = CurateConfig.model_validate({"inputs": [{"path": path}], **PIPELINE, **({"select": select} if select else {})})
    start = time.perf_counter()
    stats = run_pipeline(config, Path(tempfile.mkdtemp()), progress=False)
    total = time.perf_counter() - start
    return {"total_seconds": round(total, 1), "stages": {s.stage: s.seconds for s in stats.stages},
            "select": next((s.figures for s in stats.stages if s.stage == "select"), None)}


def compare_methods(rows: list[dict], budget: int) -> list[dict]:
    from curation.dedup.encoders import load_encoder
    from curation.select.diversity import Budget, pick
    from curation.select.score import combined

    texts = [f"{r['instruction']}\n{r['output']}" for r in rows]  # the no_system view of an Alpaca row
    start = time.perf_counter()
    vectors = load_encoder().encode(texts, None, False)
    embed_seconds = time.perf_counter() - start
    length = np.array([len(r["output"].split()) for r in rows], float)
    rate = np.array([r["win_rate"] for r in rows])
    score = combined({"length": length, "jury": rate}, {"length": 1.0, "jury": 1.0}, len(rows))
    ids = np.arange(len(rows))
    order = np.lexsort((ids, -score))
    instruction = np.array([r["instruction"] for r in rows])
    dataset = np.array([r["dataset"] for r in rows])
    out = []
    for method, params in METHODS:
        start = time.perf_counter()
        chosen = pick(vectors, score, order, Budget(budget, None, None), method,
                      params.get("radius", 0.9), params.get("mmr_lambda", 0.7))
        seconds = time.perf_counter() - start
        sel = chosen.selected
        _, per_instruction = np.unique(instruction[sel], return_counts=True)
        out.append({
            "method": method, **params, "selected": len(sel), "seconds": round(seconds, 2),
            "instructions_covered": int(len(per_instruction)), "max_per_instruction": int(per_instruction.max()),
            "subsets_covered": int(len(set(dataset[sel]))), "mean_model_win_rate": round(float(rate[sel].mean()), 2),
            "mean_words": round(float(length[sel].mean()), 1), "mean_score": round(float(score[sel].mean()), 4),
        })
        print(out[-1], flush=True)
    return [{"embed_seconds": round(embed_seconds, 1)}, *out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=65)
    parser.add_argument("--budget", type=int, default=5000)
    parser.add_argument("--timing-budget", type=int, default=10_000)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-methods", action="store_true")
    args = parser.parse_args()
    rows = load_rows(args.models)
    print(f"{len(rows)} rows, {len({r['instruction'] for r in rows})} instructions, {args.models} models", flush=True)
    result: dict = {"rows": len(rows), "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    if not args.skip_methods:
        result["methods"] = compare_methods(rows, args.budget)
    if not args.skip_timing:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "alpaca.json"
            path.write_text(json.dumps([{"instruction": r["instruction"], "input": "", "output": r["output"]} for r in rows]))
            select = {"budget": {"records": args.timing_budget}}
            for name, section in (("without", None), ("with", select), ("without_again", None)):
                result[name] = in_fresh_process(run_curation, str(path), section)
                print(name, result[name], flush=True)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"select_{len(rows)}{'' if args.skip_timing else '_timing'}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
