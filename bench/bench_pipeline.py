"""The whole curation on a 100k-document real-text corpus: docs/s and peak memory per stage.

    cd /work/main && .venv/bin/python -m bench.bench_pipeline [--docs 100000] [--semantic-docs 2000]

The corpus comes from bench.corpus (real PEP, Gutenberg, State of the Union, C4 and Wikipedia
text cut into documents, with planted exact and near duplicates), written as JSONL so ingest
is measured on the real reading path. In one fresh process the stages run in pipeline order on
the records the previous stage kept, each measured for wall and CPU seconds and peak RSS
growth (bench.measure). The semantic stage runs on its own, on the first --semantic-docs
documents, because embeddings on a CPU are orders of magnitude slower than the rest: its docs/s
is reported, not folded into the 100k total. Prints a markdown table; writes JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.corpus import build_corpus
from bench.measure import in_fresh_process, measured

RESULTS = Path(__file__).resolve().parent / "results"
# The demo's filter and dedup settings, without the semantic stage.
CONFIG: dict[str, dict[str, Any]] = {
    "filters": {
        "length": {"min_words": 3, "max_words": 4000},
        "keywords": {"exclude": ["as an ai language model"], "refusals": True},
        "format": {"json": True, "code": True},
        "repetition": {"max_dup_line_frac": 0.3, "max_top_ngram_frac": 0.2},
    },
    "dedup": {"exact": {}, "minhash": {"threshold": 0.8, "num_perm": 128, "ngram": 5}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--semantic-docs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    corpus = build_corpus(args.docs, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps({"text": t}) for t in corpus.texts) + b"\n")
        load = [round(x, 2) for x in os.getloadavg()]
        stages = in_fresh_process(_run_pipeline, str(path))
        semantic = in_fresh_process(_run_semantic, corpus.texts[: args.semantic_docs])
    result = {
        "docs": len(corpus.texts),
        "cpus": os.cpu_count(),
        "loadavg_before": load,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "memory_measure": "peak RSS growth during the stage, one fresh process for the pipeline",
        "stages": stages,
        "total_seconds_without_semantic": sum(s["seconds"] for s in stages),
        "semantic": semantic,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"pipeline_{len(corpus.texts)}.json"
    out.write_text(json.dumps(result, indent=2))
    print(_table(result))
    print(f"\nwritten {out}")


def _run_pipeline(path: str) -> list[dict]:
    from curation.core.run import Call, run_pipeline
    from schemas.config import CurateConfig

    config = CurateConfig.model_validate({"inputs": [{"path": path}], **CONFIG})
    measures: dict[str, tuple[float, float, float]] = {}

    def measure(call: Call) -> Any:
        result, seconds, cpu, memory = measured(call.run)
        measures[call.name] = (seconds, cpu, memory)
        return result

    stats = run_pipeline(config, Path(tempfile.mkdtemp()), in_memory=True, around=measure)
    return [_row(s.stage, s.rows_in, s.out, *measures[s.stage]) for s in stats.stages]


def _run_semantic(texts: list[str]) -> dict:
    from bench.corpus import to_records
    from curation.dedup.encoders import load_encoder
    from curation.dedup.semantic import build_semantic_stage
    from schemas.config import SemanticDedup

    cfg = SemanticDedup()
    load_encoder(cfg.model, cfg.max_seq_length)  # loading is not the stage's throughput
    records = to_records(texts)
    result, seconds, cpu, memory = measured(lambda: build_semantic_stage(cfg, progress=False)(records))
    return _row("dedup_semantic", len(texts), result.kept.height, seconds, cpu, memory)


def _row(stage: str, rows_in: int, rows_out: int, seconds: float, cpu: float, memory: float) -> dict:
    return {
        "stage": stage,
        "in": rows_in,
        "out": rows_out,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "docs_per_s": round(rows_in / seconds) if seconds else None,
        "peak_rss_mb": round(memory, 1),
    }


def _table(r: dict) -> str:
    lines = [
        "| stage | in | out | wall s | CPU s | docs/s | peak RSS growth MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in [*r["stages"], r["semantic"]]:
        lines.append(
            f"| {s['stage']} | {s['in']:,} | {s['out']:,} | {s['seconds']:.2f} | {s['cpu_seconds']:.2f}"
            f" | {s['docs_per_s']:,} | {s['peak_rss_mb']:.0f} |"
        )
    lines.append(
        f"\n{r['docs']:,} documents through ingest, filters, exact and MinHash dedup:"
        f" {r['total_seconds_without_semantic']:.1f} s; load average {r['loadavg_before']} -> {r['loadavg_after']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
