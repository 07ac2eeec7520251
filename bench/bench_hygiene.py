"""Data hygiene stages: decontamination, PII and language identification, on real text.

    .venv/bin/python -m bench.bench_hygiene [--docs 100000]

1. **Throughput** (each stage in a fresh process, on one in-memory frame): `--docs` documents
   from bench/corpus.py with planted contamination (1% of documents embed a GSM8K or MT-Bench
   test question) and planted PII (1% carry one value of a kind), against ten benchmark files
   (every file of ../shared/data/sft and pref, GSM8K and MT-Bench among them); the index build is
   timed cold (empty cache) and warm (from its cache).
2. **Paraphrases** (the semantic check): the bundled SmolLM2's checked rewrites of GSM8K test
   questions and Self-Instruct's human-evaluation instructions (bench/paraphrases.py, the set
   bench_semantic uses, cached in .cache/bench-llm). The benchmarks are the first 660 GSM8K items
   and the first 126 Self-Instruct ones; positives are the rewrites of their items; hard negatives
   are the other GSM8K questions and Self-Instruct instructions (same style, not in the
   benchmark), ordinary negatives 999 Alpaca instructions. Precision and recall per cosine
   threshold, for both encoders, and the n-gram check's recall on the same rewrites.
3. **Language identification**: docs/s of py3langid (the one used) and lingua on short English
   instructions and on 1,000-character documents, and English false rejects at the default
   confidence on the shared English sets.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from bench.measure import in_fresh_process, measured

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCHMARKS = [*sorted((SHARED / "sft").iterdir()), *sorted((SHARED / "pref").iterdir())]
PII_VALUES = {
    "email": "jane.doe+work@example-mail.co.uk", "phone": "(415) 555-2671", "ip": "151.101.1.69",
    "credit_card": "4111 1111 1111 1111", "secret": "ghp_" + "a1B2c3D4e5" * 4,
}
THRESHOLDS = (0.7, 0.75, 0.8, 0.85, 0.9)
# The paraphrase benchmark: these first items of GSM8K test and of the Self-Instruct human
# evaluation set; the rest of each file are same-style negatives that are not in it.
GSM8K_BENCHMARK, SELFINSTRUCT_BENCHMARK = 660, 126
ENCODERS = ("minilm-static", "all-MiniLM-L6-v2")


def _questions() -> tuple[list[str], list[str]]:
    gsm8k = [json.loads(line)["question"] for line in (SHARED / "sft" / "gsm8k_test.jsonl").open()]
    mt_bench = [json.loads(line)["turns"][0] for line in (SHARED / "sft" / "mt_bench_question.jsonl").open()]
    return gsm8k, mt_bench


def planted_corpus(n: int, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Raw documents, 1% with a test question inside, 1% with one PII value; those rows."""
    from bench.corpus import build_corpus, to_records

    rng = np.random.default_rng(seed)
    texts = build_corpus(n, seed=seed).texts
    gsm8k, mt_bench = _questions()
    questions = gsm8k + mt_bench
    contaminated = rng.choice(len(texts), n // 100, replace=False)
    for i in contaminated:
        words = texts[i].split(" ")
        at = int(rng.integers(0, len(words)))
        texts[i] = " ".join([*words[:at], questions[int(rng.integers(0, len(questions)))], *words[at:]])
    with_pii = rng.choice(len(texts), n // 100, replace=False)
    kinds = list(PII_VALUES)
    for k, i in enumerate(with_pii):
        texts[i] += f" Contact: {PII_VALUES[kinds[k % len(kinds)]]}."
    return to_records(texts), contaminated, with_pii


def _decontamination(n: int) -> dict:
    from bench.stage_output import figures, frame
    from curation.decontamination.index import build_index
    from curation.decontamination.stage import build_decontamination_stage
    from schemas.config import Decontamination
    from schemas.figures import DecontaminationFigures

    records, planted, _ = planted_corpus(n)
    cfg = Decontamination(benchmarks=[{"path": str(p)} for p in BENCHMARKS])
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CURATE_CACHE_DIR"] = cache
        _, cold, _, _ = measured(lambda: build_index(cfg))
        from curation.decontamination import index as index_module

        index_module._cached_part.cache_clear()  # warm = from the disk cache, not this process's memory
        _, warm, _, _ = measured(lambda: build_index(cfg))
        stage = build_decontamination_stage(cfg, None)
        result, seconds, cpu, rss = measured(lambda: stage(records))
    by_benchmark = figures(result, DecontaminationFigures).benchmarks
    rejected = frame(result.rejected)
    removed = rejected["id"].str.extract(r"(\d+)$").cast(pl.Int64).to_numpy()
    extra = rejected.filter(~pl.Series(np.isin(removed, planted)))
    return {"docs": n, "planted": len(planted), "planted_found": int(np.isin(planted, removed).sum()),
            "removed": rejected.height, "not_planted": extra["detail"].head(12).to_list(), "seconds": round(seconds, 2),
            "cpu": round(cpu, 2), "rss_mb": round(rss), "docs_per_s": round(n / seconds),
            "index_cold_s": round(cold, 2), "index_warm_s": round(warm, 2),
            "benchmark_texts": sum(f.texts for f in by_benchmark.values()), "benchmarks": len(by_benchmark),
            "by_benchmark": {k: v.benchmark_overlap for k, v in by_benchmark.items()}}


def _pii(n: int) -> dict:
    from bench.stage_output import figures, frame
    from curation.pii import build_pii_stage
    from schemas.config import PiiConfig
    from schemas.figures import PiiFigures

    records, _, planted = planted_corpus(n)
    stage = build_pii_stage(PiiConfig())
    result, seconds, cpu, rss = measured(lambda: stage(records))
    kept = frame(result.kept)
    pii = figures(result, PiiFigures)
    marked = kept.filter(pl.col("meta").str.contains('"pii"'))["id"].str.extract(r"(\d+)$").cast(pl.Int64).to_numpy()
    texts = kept["text"].gather(planted.tolist())
    left = int(sum(texts.str.contains(v, literal=True).sum() for v in PII_VALUES.values()))
    return {"docs": n, "planted": len(planted), "planted_found": int(np.isin(planted, marked).sum()),
            "planted_values_left": left, "found": pii.found,
            "records_with_pii": pii.records_with_pii, "seconds": round(seconds, 2), "cpu": round(cpu, 2),
            "rss_mb": round(rss), "docs_per_s": round(n / seconds)}


def _paraphrases(encoder: str) -> dict:
    from bench.corpus import to_records
    from bench.paraphrases import build
    from bench.stage_output import frame
    from curation.decontamination.stage import build_decontamination_stage
    from schemas.config import Decontamination

    gsm8k, _ = _questions()
    selfinstruct = [json.loads(x)["instruction"] for x in (SHARED / "sft" / "selfinstruct_user_oriented_252.jsonl").open()]
    para = build(300, progress=False)  # bench_semantic's set: its rewrites are cached
    in_benchmark = set(gsm8k[:GSM8K_BENCHMARK]) | set(selfinstruct[:SELFINSTRUCT_BENCHMARK])
    positives = [para.texts[b] for a, b in para.pairs if para.texts[a] in in_benchmark]
    alpaca = [r["instruction"] for r in json.loads((SHARED / "sft" / "llamafactory_alpaca_en_demo.json").read_text())]
    hard, ordinary = gsm8k[GSM8K_BENCHMARK:] + selfinstruct[SELFINSTRUCT_BENCHMARK:], alpaca
    with tempfile.TemporaryDirectory() as tmp:
        benchmarks = []
        parts = (("gsm8k_test.jsonl", GSM8K_BENCHMARK), ("selfinstruct_user_oriented_252.jsonl", SELFINSTRUCT_BENCHMARK))
        for name, count in parts:
            path = Path(tmp) / name
            path.write_text("".join((SHARED / "sft" / name).read_text().splitlines(keepends=True)[:count]))
            benchmarks.append({"path": str(path), "view": "user"})
        cfg = Decontamination(
            benchmarks=benchmarks,
            semantic={"threshold": min(THRESHOLDS), "model": None if encoder == "minilm-static" else encoder},
        )
        records = to_records(positives + hard + ordinary)
        stage = build_decontamination_stage(cfg, None)
        result, seconds, _, rss = measured(lambda: stage(records))
    rejected = frame(result.rejected)
    row = rejected["id"].str.extract(r"(\d+)$").cast(pl.Int64).to_numpy()
    cosine = rejected["detail"].str.extract(r"cosine ([\d.]+)").cast(pl.Float64).fill_null(1.0).to_numpy()
    overlap = (rejected["reason"] == "benchmark_overlap").to_numpy()
    n_pos, n_hard = len(positives), len(hard)
    out: dict = {"positives": n_pos, "hard_negatives": n_hard, "ordinary_negatives": len(ordinary),
                 "seconds": round(seconds, 2), "rss_mb": round(rss),
                 "ngram_recall": round(float((overlap & (row < n_pos)).sum()) / n_pos, 3), "by_threshold": {}}
    for t in THRESHOLDS:
        hit = overlap | (cosine >= t)
        tp = int((hit & (row < n_pos)).sum())
        fp_hard = int((hit & (row >= n_pos) & (row < n_pos + n_hard)).sum())
        fp_ordinary = int((hit & (row >= n_pos + n_hard)).sum())
        out["by_threshold"][str(t)] = {
            "recall": round(tp / n_pos, 3), "precision": round(tp / max(1, tp + fp_hard + fp_ordinary), 3),
            "hard_negatives_removed": fp_hard, "ordinary_negatives_removed": fp_ordinary}
    return out


def _language() -> dict:
    from curation.filters.language import detect, identifier

    texts = []
    for name in ("llamafactory_alpaca_en_demo.json", "code_alpaca_2k.json"):
        texts += [r["instruction"] for r in json.loads((SHARED / "sft" / name).read_text())]
    for name in ("gsm8k_test.jsonl", "selfinstruct_user_oriented_252.jsonl"):
        texts += [json.loads(x).get("question") or json.loads(x)["instruction"] for x in (SHARED / "sft" / name).open()]
    from bench.corpus import build_corpus

    documents = [t[:1000] for t in build_corpus(1000, seed=3).texts]
    out: dict = {"short_texts": len(texts), "documents": len(documents)}
    _, load, _, _ = measured(identifier)
    found, short_s, _, _ = measured(lambda: detect(texts, ["en"]))
    _, doc_s, _, _ = measured(lambda: detect(documents, ["en"]))
    wrong = sum(1 for lang, p, _ in found if lang != "en" and p >= 0.5)
    out["py3langid"] = {"load_s": round(load, 2), "short_docs_per_s": round(len(texts) / short_s),
                        "documents_per_s": round(len(documents) / doc_s), "english_rejected_at_0.5": wrong}
    try:
        from lingua import LanguageDetectorBuilder
    except ImportError:
        out["lingua"] = "not installed (pip install lingua-language-detector)"
        return out
    detector, load, _, _ = measured(lambda: LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build())
    sample = texts[:2000]
    top, short_s, _, _ = measured(lambda: detector.compute_language_confidence_values_in_parallel(sample))
    _, doc_s, _, _ = measured(lambda: detector.compute_language_confidence_values_in_parallel(documents))
    wrong = sum(1 for c in top if c[0].language.iso_code_639_1.name.lower() != "en" and c[0].value >= 0.5)
    out["lingua"] = {"load_s": round(load, 2), "short_docs_per_s": round(len(sample) / short_s),
                     "documents_per_s": round(len(documents) / doc_s), "english_rejected_at_0.5": wrong,
                     "short_texts": len(sample)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "paraphrases", "language"])
    args = parser.parse_args()
    result: dict = {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "date": time.strftime("%Y-%m-%d")}
    if "throughput" not in args.skip:
        result["decontamination"] = in_fresh_process(_decontamination, args.docs)
        print("decontamination", result["decontamination"], flush=True)
        result["pii"] = in_fresh_process(_pii, args.docs)
        print("pii", result["pii"], flush=True)
    if "paraphrases" not in args.skip:
        result["paraphrases"] = {e: in_fresh_process(_paraphrases, e) for e in ENCODERS}
        print("paraphrases", json.dumps(result["paraphrases"], indent=1), flush=True)
    if "language" not in args.skip:
        result["language"] = in_fresh_process(_language)
        print("language", result["language"], flush=True)
    result["loadavg_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"hygiene_{args.docs}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
