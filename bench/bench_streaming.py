"""Peak memory of the streaming stages as the corpus grows (100k, 300k, 1M documents).

    cd /work/main && .venv/bin/python -m bench.bench_streaming [--docs 100000 300000 1000000] [--batch-size 10000]
        [--semantic-docs 10000 40000]

For each size, a JSONL corpus goes through ingest -> filters -> exact -> MinHash dedup -> writing
the run files twice, each in a fresh process: streamed (ingest writes parquet shards of
--batch-size rows, every stage reads one shard at a time; curation/corpus.py) and in memory (the
baseline in the same run: the whole corpus in one frame, as before streaming existed). Per stage:
wall seconds and the process's peak RSS during that stage (VmHWM, reset before each stage through
/proc/self/clear_refs after returning freed heap to the OS), next to the RSS of the idle process
with its libraries loaded. Semantic dedup runs on its own on --semantic-docs documents, streamed,
with its default settings. Prints markdown tables; writes JSON to bench/results/.

The corpus: bench.corpus cuts the shared raw text into at most ~130k distinct documents (with
planted exact and near duplicates), so N documents are ceil(N / 100k) copies of its 100k corpus,
copy c with every fifth word tagged `~c`: every 5-word shingle then differs between copies, so
the copies are distinct documents to every stage, while each copy keeps the real text's lengths,
vocabulary and planted duplicates. Not to an embedding, though (a tagged copy keeps its words):
the semantic runs beyond 100k documents add documents made of the first half of one base
document and the second half of another (seeded pairs), so the kept set, and with it the search
index, grows with the corpus.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bench.bench_pipeline import CONFIG
from bench.corpus import build_corpus
from bench.measure import in_fresh_process

if TYPE_CHECKING:
    from curation.core.run import Call

RESULTS = Path(__file__).resolve().parent / "results"
BASE_DOCS = 100_000
STAGES = ("ingest", "filters", "dedup_exact", "dedup_minhash", "write_run")
SEMANTIC: dict[str, Any] = {"dedup": {"semantic": {}}}  # the defaults: the static encoder, 128 tokens, threshold 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="*", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--semantic-docs", type=int, nargs="*", default=[10_000, 40_000])
    args = parser.parse_args()

    runs = []
    base = build_corpus(BASE_DOCS, seed=0).texts
    for n in args.semantic_docs:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "corpus.jsonl"
            _write_mixed(base, n, path)
            semantic = in_fresh_process(_run, str(path), args.batch_size, tmp, SEMANTIC)
            runs.append({"docs": n, "jsonl_mb": round(path.stat().st_size / 2**20), "mode": "streamed", **semantic})
            print(json.dumps(runs[-1]), flush=True)
    for n in args.docs:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "corpus.jsonl"
            _write_scaled(base, n, path)
            size = path.stat().st_size
            for mode, batch in (("streamed", args.batch_size), ("in memory", None)):
                stages = in_fresh_process(_run, str(path), batch, tmp)
                runs.append({"docs": n, "jsonl_mb": round(size / 2**20), "mode": mode, **stages})
                print(json.dumps(runs[-1]), flush=True)
    result = {"cpus": os.cpu_count(), "batch_size": args.batch_size, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "streaming.json").write_text(json.dumps(result, indent=2) + "\n")
    print(_table([r for r in runs if "filters" in r], STAGES))
    print(_table([r for r in runs if "dedup_semantic" in r], ("ingest", "dedup_semantic", "write_run")))


def _write_scaled(base: list[str], n: int, path: Path) -> None:
    with path.open("wb") as f:
        for copy in range(-(-n // len(base))):
            for text in base[: n - copy * len(base)]:
                if copy:
                    words = text.split(" ")
                    words[::5] = [f"{w}~{copy}" for w in words[::5]]
                    text = " ".join(words)
                f.write(orjson.dumps({"text": text}) + b"\n")


def _write_mixed(base: list[str], n: int, path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    with path.open("wb") as f:
        for text in base[:n]:
            f.write(orjson.dumps({"text": text}) + b"\n")
        for a, b in rng.integers(0, len(base), (max(0, n - len(base)), 2)):
            first, second = base[a].split(" "), base[b].split(" ")
            text = " ".join(first[: len(first) // 2] + second[len(second) // 2 :])
            f.write(orjson.dumps({"text": text}) + b"\n")


def _run(path: str, batch_size: int | None, tmp: str, stages_config: dict = CONFIG) -> dict:
    from curation.core.run import run_pipeline
    from schemas.config import CurateConfig

    execution = {"execution": {"batch_size": batch_size}} if batch_size else {}
    config = CurateConfig.model_validate({"inputs": [{"path": path}], **stages_config, **execution})
    out: dict = {"idle_rss_mb": reset_peak()}
    measure = step_meter(out, digits=2)
    stats = run_pipeline(config, Path(tmp) / f"work-{batch_size}" / "run", path, in_memory=batch_size is None, around=measure)
    out["kept"] = stats.totals.kept
    return out


def step_meter(into: dict, digits: int) -> Callable[[Call], Any]:
    """An `around` for run_pipeline: each step's seconds and its own peak RSS, into `into`."""

    def measure(call: Call) -> Any:
        reset_peak()
        start = time.perf_counter()
        value = call.run()
        into[call.name] = {"seconds": round(time.perf_counter() - start, digits), "peak_rss_mb": peak_rss_mb()}
        return value

    return measure


def reset_peak() -> float:
    """Return freed heap to the OS, make the current RSS the new peak; the current RSS in MB."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024)
    raise RuntimeError(f"no {field} in /proc/self/status")


def _table(runs: list[dict], stages: tuple[str, ...]) -> str:
    head = "| docs | mode | idle RSS | " + " | ".join(stages) + " | kept |"
    lines = [head, "|" + "---|" * (len(stages) + 4)]
    for r in runs:
        cells = [f"{r[s]['peak_rss_mb']:.0f} MB, {r[s]['seconds']:.1f} s" for s in stages]
        lines.append(f"| {r['docs']:,} | {r['mode']} | {r['idle_rss_mb']:.0f} MB | " + " | ".join(cells) + f" | {r['kept']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
