"""Peak memory of whole runs on inputs that used to grow it without need (issue 22, item 9).

    .venv/bin/python -m bench.bench_memory [--rows 1000000 2000000] [--docs 1000000] [--phrases 1000000]
        [--keyword-docs 100000] [--cases repeated distinct keywords]

Three cases, each size run by `curation.core.run.run_pipeline` (streamed, no Prefect) in a
fresh interpreter; the child reports each step's own peak RSS (VmHWM, reset before the step, as bench.bench_streaming
does); the run's peak is the highest of them (and of the child's ru_maxrss from os.wait4), its
seconds the child's wall time, interpreter start included:

- repeated: a zstd JSONL of one line repeated --rows times (every row has the same content id),
  through the demo's filters and exact + MinHash dedup;
- near: --docs distinct documents that are all near duplicates of each other (60 fixed words,
  then `item <n>`: shingle Jaccard ~0.84), exact + MinHash;
- keywords: an `exclude_file` of --phrases distinct 2-3 word phrases over --keyword-docs real
  documents (bench.corpus), the keyword filter alone.

Prints a markdown table; writes JSON to bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from bench.bench_pipeline import CONFIG

RESULTS = Path(__file__).resolve().parent / "results"
LINE = {"messages": [{"role": "user", "content": "What is the capital of France?"},
                     {"role": "assistant", "content": "The capital of France is Paris, on the Seine."}]}
NEAR = " ".join(f"word{k}" for k in range(60))  # 60 distinct words: 53 of a document's 58 shingles are shared
DEDUP = {"dedup": {"exact": {}, "minhash": {"threshold": 0.8, "num_perm": 128, "ngram": 5}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 2_000_000])
    parser.add_argument("--docs", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--phrases", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--keyword-docs", type=int, default=100_000)
    parser.add_argument("--cases", nargs="*", default=["repeated", "near", "keywords"])
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case, sizes in (("repeated", args.rows), ("near", args.docs), ("keywords", args.phrases)):
            if case not in args.cases:
                continue
            for n in sizes:
                config = _prepare(case, n, args.keyword_docs, work)
                runs.append({"case": case, "n": n, **_child(config, work / f"run-{case}-{n}")})
                print(json.dumps(runs[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps({"cpus": os.cpu_count(), "runs": runs}, indent=2) + "\n")
    print(_table(runs))


def _prepare(case: str, n: int, keyword_docs: int, work: Path) -> dict:
    """Write the case's input files; its config."""
    if case == "repeated":
        import pyarrow as pa  # pyarrow's zstd codec, as ingest reads it

        path = work / f"repeated-{n}.jsonl.zst"
        line = orjson.dumps(LINE) + b"\n"
        with pa.output_stream(str(path), compression="zstd") as f:
            for _ in range(0, n, 10_000):
                f.write(line * min(10_000, n))
        return {"inputs": [{"path": str(path)}], **CONFIG}
    if case == "near":
        path = work / f"near-{n}.jsonl"
        with path.open("wb") as f:
            for i in range(n):
                f.write(orjson.dumps({"text": f"{NEAR} item {i}"}) + b"\n")
        return {"inputs": [{"path": str(path)}], **DEDUP}
    from bench.corpus import build_corpus

    corpus = work / f"corpus-{keyword_docs}.jsonl"
    if not corpus.exists():
        texts = build_corpus(keyword_docs, seed=0).texts
        corpus.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts))
    phrases = work / f"phrases-{n}.txt"
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    # Pseudo-words of 3-8 letters: almost none occur in the real text, as in a large block list.
    vocab = sorted({"".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(50_000)})
    picks = rng.integers(0, len(vocab), (n, 3))
    sizes = rng.integers(2, 4, n)
    lines = {" ".join(vocab[w] for w in row[:k]) for row, k in zip(picks.tolist(), sizes.tolist(), strict=True)}
    phrases.write_text("# generated block list\n" + "\n".join(sorted(lines)) + "\nthe united states\n")
    return {"inputs": [{"path": str(corpus)}], "filters": {"keywords": {"exclude_file": str(phrases)}}}


def _child(config: dict, out: Path) -> dict:
    """Run the config in a fresh interpreter: its peak RSS (wait4), wall seconds, step peaks."""
    start = time.perf_counter()
    log = out.with_name(out.name + ".log")
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "bench.bench_memory", "--child", json.dumps(config), str(out)],
                                stdout=subprocess.PIPE, stderr=stderr,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        assert proc.stdout is not None
        report = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    if status:
        last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        return {"failed": (last[0] if last else f"status {status}")[:300], "peak_rss_mb": round(usage.ru_maxrss / 1024),
                "seconds": round(time.perf_counter() - start, 1)}
    steps = json.loads(report.decode().strip().splitlines()[-1])
    # The child resets its high-water mark before each step, which ru_maxrss reads at exit:
    # the peak is the highest of the steps' peaks (and of ru_maxrss).
    step_peaks = [v["peak_rss_mb"] for v in steps.values() if isinstance(v, dict) and "peak_rss_mb" in v]
    peak = max([usage.ru_maxrss / 1024, *step_peaks])
    return {"peak_rss_mb": round(peak), "seconds": round(time.perf_counter() - start, 1), **steps}


def _run_child(config_json: str, out: str) -> None:
    from bench.bench_streaming import reset_peak, step_meter
    from curation.core.run import run_pipeline
    from schemas.config import CurateConfig

    config = CurateConfig.model_validate(json.loads(config_json))
    steps: dict = {"idle_rss_mb": reset_peak()}
    stats = run_pipeline(config, Path(out), around=step_meter(steps, digits=1))
    steps["totals"] = stats.totals.model_dump()
    print(json.dumps(steps), flush=True)


def _table(runs: list[dict]) -> str:
    lines = ["| case | rows | peak RSS | seconds | per step (peak MB, s) | kept / rejected |", "|---|---:|---:|---:|---|---:|"]
    for r in runs:
        skip = ("case", "n", "peak_rss_mb", "seconds", "idle_rss_mb", "totals", "failed")
        steps = ", ".join(f"{k} {v['peak_rss_mb']:.0f}/{v['seconds']:.0f}" for k, v in r.items() if k not in skip)
        if "failed" in r:
            head = f"| {r['case']} | {r['n']:,} | {r['peak_rss_mb']:,} MB | {r['seconds']}"
            lines.append(f"{head} | failed: {r['failed'][:120]} | - |")
            continue
        t = r["totals"]
        head = f"| {r['case']} | {r['n']:,} | {r['peak_rss_mb']:,} MB | {r['seconds']}"
        lines.append(f"{head} | {steps} | {t['kept']:,} / {t['rejected']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _run_child(sys.argv[2], sys.argv[3])
    else:
        main()
