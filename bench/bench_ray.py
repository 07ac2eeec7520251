"""The Ray engine against the local engine on the same corpus: per-stage seconds and what they keep.

    cd /work/main && .venv/bin/python -m bench.bench_ray [--docs 100000] [--semantic-docs 2000]

The corpus comes from bench.corpus (real text with planted exact and near duplicates). Each
variant runs in a fresh process: the local engine, then a local Ray instance with 1 and with 2
CPUs (so at most 1 or 2 tasks at a time), batch_size = docs / 10 (ten partitions). The stages
are the demo's filters, exact and MinHash dedup on all documents, and semantic dedup on the first
--semantic-docs (embeddings on a CPU are slow). Ray start-up is not counted: the instance is
started, and warmed with one task per CPU, before the clock starts. Each variant must keep the
same ids as the local engine. Writes bench/results/ray_<docs>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.bench_pipeline import CONFIG
from bench.corpus import build_corpus, to_records
from bench.measure import in_fresh_process, measured

if TYPE_CHECKING:
    from curation.core.engine import Engine
    from curation.core.stage import Stage
    from schemas.config import CurateConfig

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = [("local", None), ("ray, 1 CPU", 1), ("ray, 2 CPUs", 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--semantic-docs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corpus = build_corpus(args.docs, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.json"
        path.write_text(json.dumps(corpus.texts))
        load = [round(x, 2) for x in os.getloadavg()]
        runs = {
            name: in_fresh_process(_run, str(path), cpus, max(1, args.docs // 10), args.semantic_docs)
            for name, cpus in VARIANTS
        }
    local_kept = runs["local"].pop("kept")
    for name, run in runs.items():
        if name != "local":
            run["same_kept_as_local"] = run.pop("kept") == local_kept
    result = {
        "docs": args.docs,
        "semantic_docs": args.semantic_docs,
        "cpus": os.cpu_count(),
        "loadavg_before": load,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ray_{args.docs}.json"
    out.write_text(json.dumps(result, indent=2))
    print(_table(result))
    print(f"\nwritten {out}")


def _run(path: str, cpus: int | None, batch_size: int, semantic_docs: int) -> dict:
    from bench.stage_output import frame
    from curation.core.engine import LocalEngine, RayEngine
    from curation.dedup.encoders import load_encoder
    from curation.dedup.semantic import build_semantic_stage
    from schemas.config import CurateConfig
    from schemas.execution import ExecutionConfig

    texts = json.loads(Path(path).read_text())
    engine: Engine
    if cpus is None:
        engine = LocalEngine()
    else:
        engine = RayEngine(ExecutionConfig(engine="ray", num_cpus=cpus, batch_size=batch_size), progress=False)
        import ray

        warm = ray.remote(lambda: None)
        ray.get([warm.remote() for _ in range(cpus)])
    config = CurateConfig.model_validate(
        {"inputs": [{"path": path}], **CONFIG, "dedup": {**CONFIG["dedup"], "semantic": {"max_seq_length": 128}}}
    )
    records = to_records(texts)
    seconds: dict[str, float] = {}
    memory: dict[str, float] = {}
    for stage in _stages(config, engine):  # these stages alone, each on what the one before kept
        result, seconds[stage.name], _, memory[stage.name] = measured(lambda: stage(records))  # noqa: B023
        records = frame(result.kept)
    kept = records["id"].to_list()
    # Semantic dedup on its own sample, in ten partitions too. The model is loaded before the
    # clock starts: in this process (local), or in each Ray worker by a tiny run (one row a task).
    sample = to_records(texts[:semantic_docs])
    assert config.dedup is not None and config.dedup.semantic is not None  # the config above sets both
    semantic_cfg = config.dedup.semantic
    if cpus is None:
        load_encoder(semantic_cfg.model, semantic_cfg.max_seq_length)
        semantic = build_semantic_stage(semantic_cfg, False, engine)
    else:
        one_row_tasks = RayEngine(ExecutionConfig(engine="ray", batch_size=1), progress=False)
        build_semantic_stage(semantic_cfg, False, one_row_tasks)(sample.head(4 * cpus))
        every_tenth = ExecutionConfig(engine="ray", batch_size=max(1, semantic_docs // 10))
        semantic = build_semantic_stage(semantic_cfg, False, RayEngine(every_tenth, progress=False))
    start = time.perf_counter()
    result = semantic(sample)
    seconds[semantic.name] = time.perf_counter() - start
    return {"seconds": seconds, "driver_peak_rss_growth_mb": memory, "kept": kept + frame(result.kept)["id"].to_list()}


def _stages(config: CurateConfig, engine: Engine) -> list[Stage]:
    from curation.dedup.exact import build_exact_stage
    from curation.dedup.minhash import build_minhash_stage
    from curation.filters import build_filter_stage

    dedup = config.dedup
    assert config.filters and dedup and dedup.exact and dedup.minhash  # CONFIG sets them all
    return [
        build_filter_stage(config.filters, engine),
        build_exact_stage(dedup.exact, engine),
        build_minhash_stage(dedup.minhash, False, engine),
    ]


def _table(r: dict) -> str:
    names = list(r["runs"])
    stages = list(r["runs"]["local"]["seconds"])
    lines = [
        "| stage | " + " | ".join(f"{n} s" for n in names) + " | ray 2 CPUs vs 1 | ray 1 CPU vs local |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for stage in stages:
        s = [r["runs"][n]["seconds"][stage] for n in names]
        docs = r["semantic_docs"] if stage == "dedup_semantic" else r["docs"]
        lines.append(
            f"| {stage} ({docs:,} docs) | "
            + " | ".join(f"{x:.2f}" for x in s)
            + f" | {s[1] / s[2]:.2f}x faster | {s[1] / s[0]:.2f}x the time |"
        )
    same = ", ".join(f"{n}: {r['runs'][n]['same_kept_as_local']}" for n in names[1:])
    lines.append(f"\nsame kept ids as local: {same}; load average {r['loadavg_before']} -> {r['loadavg_after']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
