"""Semantic dedup against semhash, in one run, on the same documents and the same encoders.

    cd /work/main && .venv/bin/pip install -e ".[bench]"   # semhash (bench only)
    .venv/bin/python -m bench.bench_semantic [--docs 5000] [--recall-docs 20000] [--threshold 0.9]

Contenders, each in a fresh process (bench.measure), model loading outside the clock:
- `dedup_semantic` (this project) with each encoder: the bundled static model (`minilm-static`,
  model2vec distilled from all-MiniLM-L6-v2) and the bundled all-MiniLM-L6-v2 transformer;
- semhash (MinishLab; `SemHash.from_records(...).self_deduplicate(threshold)`, its default usearch
  index) with the very same two encoders (this project's encoder objects: identical vectors), and
  with the distilled model2vec model as model2vec loads it (without the common direction the
  project's encoder removes), to show what that centring changes;
- an exhaustive search for the recall figure: every pair's cosine from the same embeddings
  (blockwise matrix products), walked in input order with the stage's kept rule.

Figures:
- speed: docs/s and peak RSS growth on `--docs` documents of bench.corpus (real PEP, Gutenberg,
  State of the Union, C4 and Wikipedia text cut into 30-300-word documents, planted exact and
  near copies), threshold `--threshold`;
- recall vs exhaustive on `--recall-docs` documents with the static model (past 65,536 kept
  records, so `auto` switches to the IVF index): of the records the exhaustive walk removes, the
  share each contender removes, and the share whose kept record (duplicate_of) is the same;
- planted copies on 3,000 documents (exhaustive walk): per encoder and threshold, the planted
  copies removed and the other removals (distinct documents);
- paraphrase pair F1 on bench.paraphrases (real questions and instructions, rewritten by the
  bundled SmolLM2 and checked lexically): a predicted pair is (removed record, the record it is
  a duplicate of); true pairs are (source, its rewrite). Reported at several thresholds.

Writes bench/results/semantic_<docs>.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.measure import in_fresh_process, measured

if TYPE_CHECKING:
    from model2vec import StaticModel

RESULTS = Path(__file__).resolve().parent / "results"
ENCODERS = ("minilm-static", "all-MiniLM-L6-v2")
UNCENTRED = "minilm-static, uncentred"  # semhash on the plain model2vec model, as a user would load it
PLANTED_THRESHOLDS = (0.85, 0.9, 0.95)
F1_THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
MAX_TOKENS = 128


class SemhashModel:
    """An encoder as semhash's `Encoder` protocol has it, `encode(inputs, **kwargs)`: semhash passes
    a column's texts and no options; this project's encoders take a list of texts."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray]) -> None:
        self._encode = encode

    def encode(self, inputs: Sequence[Any] | Any, **kwargs: Any) -> np.ndarray:
        return self._encode(list(inputs))


def _ours(encoder: str, texts: list[str], thresholds: list[float], search: str = "auto", verify: bool = True) -> dict:
    from bench.corpus import to_records
    from bench.stage_output import figures, frame
    from curation.dedup.encoders import load_encoder
    from curation.dedup.semantic import build_semantic_stage
    from schemas.config import SemanticDedup
    from schemas.figures import SemanticFigures

    records = to_records(texts)
    # The encoder the stage loads (its settings are the cache key): loading stays outside the clock.
    load_encoder(encoder, SemanticDedup().max_seq_length).encode(["warm up"])
    out = {}
    for t in thresholds:
        stage = build_semantic_stage(SemanticDedup(threshold=t, model=encoder, search=search, verify=verify), progress=False)
        result, seconds, cpu, rss = measured(partial(stage, records))
        rejected = frame(result.rejected)
        index = {f"doc-{i}": i for i in range(len(texts))}
        pairs = [[index[a], index[b]] for a, b in zip(rejected["id"], rejected["duplicate_of"], strict=True)]
        how = figures(result, SemanticFigures).search
        out[str(t)] = {"seconds": seconds, "cpu": cpu, "rss_mb": rss, "pairs": pairs, "how": how}
    return out


def _semhash(encoder: str, texts: list[str], thresholds: list[float]) -> dict:
    from semhash import SemHash

    model = _peer_model(encoder)
    model.encode(["warm up"])
    records = [{"id": str(i), "text": text} for i, text in enumerate(texts)]  # ids: positions come back
    out = {}
    for t in thresholds:
        def run(t: float = t):
            return SemHash.from_records(records=records, columns=["text"], model=model).self_deduplicate(threshold=t)

        result, seconds, cpu, rss = measured(run)
        pairs = [[int(d.record["id"]), int(d.duplicate_of["id"])] for d in result.filtered]
        out[str(t)] = {"seconds": seconds, "cpu": cpu, "rss_mb": rss, "pairs": pairs}
    return out


def _peer_model(encoder: str) -> SemhashModel:
    """The encoder semhash gets: this project's own (the same vectors as the stage), or, for
    UNCENTRED, the distilled model2vec model without the common direction removed."""
    if encoder == UNCENTRED:
        return SemhashModel(_uncentred().encode)
    from curation.dedup.encoders import load_encoder

    return SemhashModel(load_encoder(encoder, MAX_TOKENS).encode)


def _uncentred() -> StaticModel:
    """The distilled model2vec model as model2vec loads it (UNCENTRED)."""
    from model2vec import StaticModel

    from schemas.bundled import minilm_static_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return StaticModel.from_pretrained(minilm_static_dir())


def _exhaustive(encoder: str, texts: list[str], threshold: float) -> dict:
    from curation.dedup.encoders import load_encoder
    from curation.dedup.semantic import greedy_duplicates

    vectors = load_encoder(encoder, MAX_TOKENS).encode(texts)
    (kept_as, _), seconds, _, _ = measured(lambda: greedy_duplicates(vectors, threshold))
    dup = np.flatnonzero(kept_as != np.arange(len(texts)))
    return {"seconds": seconds, "pairs": [[int(i), int(kept_as[i])] for i in dup]}


def _planted(encoder: str, n: int, thresholds: list[float], seed: int) -> dict:
    """Planted copies found and other (distinct-document) removals per threshold, exhaustive walk."""
    from bench.corpus import build_corpus

    corpus = build_corpus(n, seed=seed)
    planted = set(corpus.pairs["b"].to_list())
    if encoder == UNCENTRED:
        vectors = np.asarray(_uncentred().encode(corpus.texts, max_length=MAX_TOKENS), np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    else:
        from curation.dedup.encoders import load_encoder

        vectors = load_encoder(encoder, MAX_TOKENS).encode(corpus.texts)
    return {t: {"planted_found": found, "planted": len(planted), "other": other}
            for t, (found, other) in planted_removals(vectors, planted, thresholds).items()}


def planted_removals(vectors: np.ndarray, planted: set[int], thresholds: Iterable[float]) -> dict[str, tuple[int, int]]:
    """Per threshold: (planted copies removed, other removals) of the stage's exhaustive greedy walk."""
    from curation.dedup.semantic import greedy_duplicates

    out = {}
    for t in thresholds:
        kept_as, _ = greedy_duplicates(vectors, t)
        removed = set(np.flatnonzero(kept_as != np.arange(len(vectors))).tolist())
        out[str(t)] = (len(removed & planted), len(removed - planted))
    return out


def pair_f1(predicted: list[list[int]], truth: set[frozenset[int]]) -> dict:
    got = {frozenset(p) for p in predicted}
    hit = len(got & truth)
    precision = hit / len(got) if got else 0.0
    recall = hit / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hit else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3)}


def vs_exhaustive(predicted: list[list[int]], exhaustive: list[list[int]]) -> dict:
    truth = {i: j for i, j in exhaustive}
    got = {i: j for i, j in predicted}
    return {
        "removed_recall": round(len(truth.keys() & got.keys()) / max(len(truth), 1), 4),
        "same_kept_record": round(sum(got.get(i) == j for i, j in truth.items()) / max(len(truth), 1), 4),
        "extra_removed": len(got.keys() - truth.keys()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--recall-docs", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--paraphrase-sources", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from bench.corpus import build_corpus
    from bench.paraphrases import build

    speed_texts = build_corpus(args.docs, seed=args.seed).texts
    recall_texts = build_corpus(args.recall_docs, seed=args.seed + 1).texts
    para = build(args.paraphrase_sources, progress=False)
    order = np.random.default_rng(args.seed).permutation(len(para.texts))  # sources and rewrites mixed
    para_texts = [para.texts[i] for i in order]
    position = {int(old): new for new, old in enumerate(order)}
    truth = {frozenset((position[a], position[b])) for a, b in para.pairs}
    result: dict = {"docs": args.docs, "recall_docs": args.recall_docs, "threshold": args.threshold,
                    "cpus": os.cpu_count(), "loadavg_before": os.getloadavg(),
                    "paraphrases": {"texts": len(para_texts), "pairs": len(truth), "dropped": para.dropped}}

    speed, f1 = {}, {}
    for encoder in (*ENCODERS, UNCENTRED):
        for name, fn in (("dedup_semantic", _ours), ("semhash", _semhash)):
            if encoder == UNCENTRED and fn is _ours:
                continue
            run = in_fresh_process(fn, encoder, speed_texts, [args.threshold])[str(args.threshold)]
            speed[f"{name} / {encoder}"] = {k: run[k] for k in ("seconds", "cpu", "rss_mb")} | {
                "docs_per_s": round(args.docs / run["seconds"], 1), "removed": len(run["pairs"])}
            runs = in_fresh_process(fn, encoder, para_texts, list(F1_THRESHOLDS))
            f1[f"{name} / {encoder}"] = {t: pair_f1(r["pairs"], truth) for t, r in runs.items()}
            print(name, encoder, speed[f"{name} / {encoder}"], flush=True)
    result["speed"], result["paraphrase_f1"] = speed, f1

    exhaustive = in_fresh_process(_exhaustive, "minilm-static", recall_texts, args.threshold)
    recall = {"exhaustive": {"seconds": round(exhaustive["seconds"], 2), "removed": len(exhaustive["pairs"])}}
    for name, fn, extra in (("dedup_semantic (auto)", _ours, ()), ("dedup_semantic (exact)", _ours, ("exact",)),
                            ("semhash", _semhash, ())):
        run = in_fresh_process(fn, "minilm-static", recall_texts, [args.threshold], *extra)[str(args.threshold)]
        recall[name] = vs_exhaustive(run["pairs"], exhaustive["pairs"]) | {
            "seconds": round(run["seconds"], 2), "how": run.get("how")}
    result["recall_vs_exhaustive"] = recall
    result["planted"] = {e: in_fresh_process(_planted, e, 3000, list(PLANTED_THRESHOLDS), args.seed)
                         for e in (UNCENTRED, *ENCODERS)}
    result["loadavg_after"] = os.getloadavg()

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"semantic_{args.docs}.json").write_text(json.dumps(result, indent=2))
    print(f"\n| contender | docs/s ({args.docs} docs) | peak RSS MB | removed |\n|---|---:|---:|---:|")
    for name, s in speed.items():
        print(f"| {name} | {s['docs_per_s']:,.0f} | {s['rss_mb']:.0f} | {s['removed']} |")
    print(f"\n| contender | {' | '.join(f'F1 @ {t}' for t in F1_THRESHOLDS)} |\n|---|{'---:|' * len(F1_THRESHOLDS)}")
    for name, by_t in f1.items():
        print(f"| {name} | {' | '.join(str(by_t[str(t)]['f1']) for t in F1_THRESHOLDS)} |")
    print(
        f"\n| search ({args.recall_docs} docs, minilm-static) | removed recall | same kept record | extra | s |"
        "\n|---|---:|---:|---:|---:|"
    )
    for name, r in recall.items():
        if name != "exhaustive":
            print(f"| {name} | {r['removed_recall']} | {r['same_kept_record']} | {r['extra_removed']} | {r['seconds']} |")
    print(f"| exhaustive | 1 | 1 | 0 | {recall['exhaustive']['seconds']} |")
    print(f"\n| encoder (3000 docs) | {' | '.join(f'@ {t}: planted found / other' for t in PLANTED_THRESHOLDS)} |")
    print(f"|---|{'---:|' * len(PLANTED_THRESHOLDS)}")
    for encoder, by_t in result["planted"].items():
        cells = [f"{by_t[str(t)]['planted_found']} / {by_t[str(t)]['other']}" for t in PLANTED_THRESHOLDS]
        print(f"| {encoder} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
