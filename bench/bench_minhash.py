"""MinHash dedup stage vs a plain per-document datasketch loop, on one build_corpus corpus.

    cd /work/main && .venv/bin/python -m bench.bench_minhash [--docs 100000] [--baseline-docs N]

Each contender runs in a fresh spawned process, so its memory figure is its own: peak RSS above
the RSS just before the call (a 5 ms sampling thread, plus ru_maxrss when it rose), which also
counts polars' Rust allocations that tracemalloc cannot see. The baseline is
`MinHash(num_perm).update_batch(shingles)` then `MinHashLSH(threshold, num_perm).query` and
`.insert` per document (datasketch's default weights, no verification; its time includes the
Python shingling, as the stage's includes tokenising); with --baseline-docs it
runs on the first N documents only, its docs/s is per document (extrapolated) and its F1 counts
the truth pairs inside those N. F1: planted pairs with true Jaccard >= threshold are the truth;
a removal is also correct when its true Jaccard with the kept record is >= threshold (a natural
duplicate in the sources). Also times the exact stage (F1 against the planted exact copies; a
removal is also correct when the normalised texts are equal). CPU seconds (user + system, all
threads) are reported next to wall time because the machine may be shared. Prints a markdown
table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import polars as pl

from bench.corpus import build_corpus, jaccard, score_edges, shingles, to_records
from bench.measure import in_fresh_process, measured
from curation.dedup.exact import normalised_text
from schemas.config import ExactDedup

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--baseline-docs", type=int, default=None, help="default: all documents")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="runs of our stages (median reported)")
    args = parser.parse_args()

    start = time.perf_counter()
    corpus = build_corpus(args.docs, seed=args.seed, ngram=args.ngram)
    seconds = time.perf_counter() - start
    print(f"corpus: {len(corpus.texts)} docs, {corpus.pairs.height} planted pairs ({seconds:.1f} s)")
    texts, thr = corpus.texts, args.threshold
    cfg = {"threshold": thr, "num_perm": args.num_perm, "ngram": args.ngram}
    n_base = min(args.baseline_docs or len(texts), len(texts))
    load = [round(x, 2) for x in os.getloadavg()]

    ours = in_fresh_process(_run_stage, texts, "minhash", cfg, args.repeats)
    exact = in_fresh_process(_run_stage, texts, "exact", {}, args.repeats)
    base = in_fresh_process(_run_baseline, texts[:n_base], cfg)

    def confirm(i: int, j: int) -> bool:
        return jaccard(shingles(texts[i], args.ngram), shingles(texts[j], args.ngram)) >= thr

    truth = corpus.truth(thr)
    ours["quality"] = score_edges(ours.pop("edges"), truth, confirm)
    base["quality"] = score_edges(base.pop("edges"), truth.filter(pl.col("b") < n_base), confirm)
    normalised = to_records(texts).select(normalised_text(ExactDedup())).to_series().to_list()

    def same_text(i: int, j: int) -> bool:
        return normalised[i] == normalised[j]

    exact["quality"] = score_edges(exact.pop("edges"), corpus.pairs.filter(kind="exact"), same_text)
    ours["docs_per_s"] = len(texts) / ours["seconds"]
    exact["docs_per_s"] = len(texts) / exact["seconds"]
    base["docs_per_s"] = n_base / base["seconds"]
    result = {
        "docs": len(texts),
        "baseline_docs": n_base,
        "config": cfg,
        "cpus": os.cpu_count(),
        "loadavg_before": load,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "memory_measure": "peak RSS growth during the call, fresh spawned process per contender",
        "dedup_minhash": ours,
        "datasketch_loop": base,
        "dedup_exact": exact,
        "speedup": ours["docs_per_s"] / base["docs_per_s"],
        "cpu_speedup": (base["cpu_seconds"] / n_base) / (ours["cpu_seconds"] / len(texts)),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"minhash_{len(texts)}.json"
    out.write_text(json.dumps(result, indent=2))
    print(_table(result))
    print(f"\nwritten {out}")


def _table(r: dict) -> str:
    rows = [
        "| contender | docs | wall s | CPU s | docs/s | peak RSS growth MB | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, docs in (
        ("dedup_minhash", r["docs"]),
        ("datasketch_loop", r["baseline_docs"]),
        ("dedup_exact", r["docs"]),
    ):
        m, q = r[name], r[name]["quality"]
        rows.append(
            f"| {name} | {docs} | {m['seconds']:.2f} | {m['cpu_seconds']:.2f} | {m['docs_per_s']:,.0f} |"
            f" {m['peak_rss_mb']:.0f} |"
            f" {q['precision']:.4f} | {q['recall']:.4f} | {q['f1']:.4f} |"
        )
    rows.append(
        f"\nspeedup dedup_minhash / datasketch_loop per document: {r['speedup']:.1f}x wall,"
        f" {r['cpu_speedup']:.1f}x CPU; load average {r['loadavg_before']} -> {r['loadavg_after']}"
    )
    return "\n".join(rows)


def _run_stage(texts: list[str], which: str, cfg: dict, repeats: int) -> dict:
    from bench.stage_output import frame
    from curation.dedup import build_exact_stage, build_minhash_stage
    from schemas.config import MinHashDedup

    records = to_records(texts)
    build = {
        "minhash": lambda: build_minhash_stage(MinHashDedup(**cfg), progress=False),
        "exact": lambda: build_exact_stage(ExactDedup()),
    }
    runs = [measured(lambda: build[which]()(records)) for _ in range(repeats)]
    result, memory = runs[0][0], runs[0][3]
    index = {doc_id: i for i, doc_id in enumerate(records["id"].to_list())}
    rejected = frame(result.rejected)
    pairs = zip(rejected["id"].to_list(), rejected["duplicate_of"].to_list(), strict=True)
    return {
        "seconds": statistics.median(run[1] for run in runs),
        "cpu_seconds": statistics.median(run[2] for run in runs),
        "runs_s": [round(run[1], 3) for run in runs],
        "peak_rss_mb": memory,
        "removed": rejected.height,
        "stage_extra": result.figures.model_dump(),
        "edges": [(index[removed], index[kept]) for removed, kept in pairs],
    }


def _run_baseline(texts: list[str], cfg: dict) -> dict:
    from datasketch import MinHash, MinHashLSH

    def loop() -> list[tuple[int, int]]:
        lsh = MinHashLSH(threshold=cfg["threshold"], num_perm=cfg["num_perm"])
        edges = []
        for i, text in enumerate(texts):
            grams = shingles(text, cfg["ngram"])
            if not grams:
                continue
            m = MinHash(num_perm=cfg["num_perm"])
            m.update_batch([g.encode() for g in grams])
            found = lsh.query(m)
            if found:
                edges.append((i, min(found)))  # the earliest candidate, as the stage keeps
            lsh.insert(i, m)
        return edges

    edges, seconds, cpu, memory = measured(loop)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": memory, "removed": len(edges), "edges": edges}


if __name__ == "__main__":
    main()
