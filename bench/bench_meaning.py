"""Meaning-aware semantic dedup (issue 23) against semhash, on three labelled sets, in one run.

    .venv/bin/python -m bench.bench_meaning --mrpc PATH/msr_paraphrase_test.txt [--docs 5000] [--rewrites 300]

Sets (bench/data/README.md says where each comes from):
- **MRPC** (human labels): the 1,725 test pairs of the Microsoft Research Paraphrase Corpus
  (news sentences; 66% labelled paraphrase, so "merge every pair" already scores F1 0.799).
  Not stored here (its licence); `--mrpc` names a local copy, skipped when absent;
- **minimal pairs** (bench/data/minimal_pairs.jsonl): instructions that share almost every word,
  from code_alpaca_2k and alpaca_en_demo: real near-pairs hand-labelled `same` / `different`,
  and constructed `different` swaps (antonym, programming language, number, direction);
- **rewrites** (bench.paraphrases: real questions and instructions rewritten by the bundled
  SmolLM2; a whole-set dedup run, pair F1 over removed record and its `duplicate_of`).

A pair set's pairs are decided one at a time: the project's decision is the stage's, cosine of
the configured encoder >= threshold and, with `verify`, no veto from curation.dedup.verify;
semhash's is `SemHash.from_records([a, b]).self_deduplicate(threshold)` on the very same encoder
object (its score read once, asked at threshold 0). Besides the grid of THRESHOLDS, each
contender's best F1 over every threshold and its recall at precision 0.9 (the range dedup runs in:
a false merge loses a record) are reported. Encoder vectors are computed once per text
(cached under bench/results, the transformer is slow on 2 cores). Contenders: the project
with `verify` (default) and without (`verify: false`, the stage before issue 23), each with the
static default and the bundled all-MiniLM-L6-v2; "re-score" is option (a) of the issue, the
static model's candidates decided by all-MiniLM-L6-v2's cosine; semhash with each encoder.

Throughput: the stage with defaults (the static model reading whole texts) and semhash with the
same encoder object on `--docs` bench.corpus documents (news-length real text), each in a fresh
process, model loading outside the clock, the best of `--repeats` runs (the 2 cores are shared).

Writes bench/results/meaning.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from bench.measure import in_fresh_process

RESULTS = Path(__file__).resolve().parent / "results"
MINIMAL = Path(__file__).resolve().parent / "data" / "minimal_pairs.jsonl"
STATIC, MINILM = "minilm-static", "all-MiniLM-L6-v2"
THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
SEMHASH_FLOOR = 0.0  # semhash is asked at this threshold once; its score is read from the result


class CachedEncoder:
    """The project's encoder behind a per-text vector cache (semhash and the stage get the same
    vectors; the transformer runs once per text across runs)."""

    def __init__(self, name: str) -> None:
        from curation.dedup.encoders import load_encoder

        self.encoder = load_encoder(name, None)
        self.path = RESULTS / f"meaning_vectors_{name}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            data = np.load(self.path)
            self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    def encode(self, texts: list[str], *args, **kwargs) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}.items())
        if todo:
            fresh = self.encoder.encode([t for _, t in todo])
            self.vectors.update(zip([k for k, _ in todo], fresh, strict=True))
            RESULTS.mkdir(exist_ok=True)
            np.savez(self.path, keys=np.array(list(self.vectors)), vectors=np.stack(list(self.vectors.values())))
        return np.stack([self.vectors[k] for k in keys]).astype(np.float32)


def mrpc(path: Path) -> tuple[list[tuple[str, str]], np.ndarray]:
    rows = [line.rstrip("\n").split("\t") for line in path.open(encoding="utf-8-sig")][1:]
    return [(r[3], r[4]) for r in rows], np.array([r[0] == "1" for r in rows])


def minimal() -> tuple[list[tuple[str, str]], np.ndarray, list[str]]:
    rows = [json.loads(line) for line in MINIMAL.open()]
    return [(r["a"], r["b"]) for r in rows], np.array([r["label"] == "same" for r in rows]), [r["kind"] for r in rows]


def scores(pairs: list[tuple[str, str]], encoders: dict[str, CachedEncoder]) -> dict[str, np.ndarray]:
    """Per contender, each pair's score: merged at threshold t when score >= t (-inf: never)."""
    from semhash import SemHash

    from bench.bench_semantic import SemhashModel
    from curation.dedup.verify import different_task

    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    cosine = {name: (e.encode(a) * e.encode(b)).sum(axis=1) for name, e in encoders.items()}
    vetoed = np.array([different_task(x, y) is not None for x, y in pairs])
    peer = {}
    for name, e in encoders.items():
        found = []
        for x, y in pairs:
            records = [{"id": "0", "text": x}, {"id": "1", "text": y}]
            filtered = SemHash.from_records(records=records, columns=["text"], model=SemhashModel(e.encode)).self_deduplicate(
                threshold=SEMHASH_FLOOR).filtered
            found.append(filtered[0].score if filtered else -np.inf)
        peer[name] = np.array(found)
    return {
        f"dedup_semantic / {STATIC} (default, verify)": np.where(vetoed, -np.inf, cosine[STATIC]),
        f"dedup_semantic / {STATIC}, verify: false (before)": cosine[STATIC],
        f"dedup_semantic / {MINILM}, verify": np.where(vetoed, -np.inf, cosine[MINILM]),
        f"dedup_semantic / {MINILM}, verify: false": cosine[MINILM],
        f"re-score: {STATIC} candidates, {MINILM} decides": np.minimum(cosine[STATIC], cosine[MINILM]),
        f"semhash / {STATIC}": peer[STATIC],
        f"semhash / {MINILM}": peer[MINILM],
    }


def decisions(by_contender: dict[str, np.ndarray]) -> dict[str, dict[str, list[bool]]]:
    """Per contender and threshold of THRESHOLDS, whether each pair is merged."""
    return {name: {str(t): (score >= t).tolist() for t in THRESHOLDS} for name, score in by_contender.items()}


def curve(score: np.ndarray, truth: np.ndarray, precisions: tuple[float, ...] = (0.9,)) -> dict:
    """Best F1 over every threshold (not only THRESHOLDS), where it is reached, and the recall at
    each of `precisions`. A pair scored -inf is never merged (vetoed, or past semhash's floor)."""
    order = np.argsort(-score, kind="stable")
    reached = np.isfinite(score[order])
    hits = np.cumsum(truth[order])
    precision, recall = hits / np.arange(1, len(truth) + 1), hits / max(int(truth.sum()), 1)
    f1 = np.where(reached, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    best = int(f1.argmax())
    out = {"best_f1": round(float(f1[best]), 3), "at_threshold": round(float(score[order][best]), 3),
           "at_precision": round(float(precision[best]), 3)}
    for p in precisions:
        ok = reached & (precision >= p)
        out[f"recall@{p}"] = round(float(recall[ok].max()) if ok.any() else 0.0, 3)
    return out


def prf(merged: np.ndarray, truth: np.ndarray) -> dict:
    hit = int((merged & truth).sum())
    precision, recall = hit / max(int(merged.sum()), 1), hit / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if hit else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3)}


def _rewrites(encoder: str, verify: bool | None, texts: list[str]) -> dict:
    """One whole-set run per threshold: the stage (verify True/False) or semhash (verify None)."""
    from bench.bench_semantic import _ours, _semhash

    if verify is None:
        return _semhash(encoder, texts, list(THRESHOLDS))
    return _ours(encoder, texts, list(THRESHOLDS), "auto", verify)


def _semhash_whole(texts: list[str], threshold: float) -> dict:
    """semhash on the stage's default encoder settings (the static model reading whole texts)."""
    from semhash import SemHash

    from bench.bench_semantic import SemhashModel
    from bench.measure import measured
    from curation.dedup.encoders import load_encoder

    encoder = load_encoder(STATIC, None)
    encoder.encode(["warm up"])
    model = SemhashModel(encoder.encode)
    records = [{"id": str(i), "text": text} for i, text in enumerate(texts)]
    result, seconds, _, _ = measured(
        lambda: SemHash.from_records(records=records, columns=["text"], model=model).self_deduplicate(threshold=threshold))
    return {"seconds": seconds, "removed": len(result.filtered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mrpc", type=Path, default=Path("msr_paraphrase_test.txt"))
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--rewrites", type=int, default=300, help="paraphrase sources (0: skip the rewritten set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per contender (best kept)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.bench_semantic import _ours, pair_f1

    encoders = {name: CachedEncoder(name) for name in (STATIC, MINILM)}
    result: dict = {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "sets": {}}
    sets = {"minimal pairs": minimal()[:2]}
    if args.mrpc.is_file():
        sets = {"MRPC test (human labels)": mrpc(args.mrpc)} | sets
    for name, (pairs, truth) in sets.items():
        by_contender = scores(pairs, encoders)
        merged = decisions(by_contender)
        result.setdefault("curves", {})[name] = {c: curve(sc, truth) for c, sc in by_contender.items()}
        result["sets"][name] = {c: {t: prf(np.array(m), truth) | {
            "merged_different": round(float(np.array(m)[~truth].mean()), 3),
            "kept_same": round(float(1 - np.array(m)[truth].mean()), 3)} for t, m in by_t.items()}
            for c, by_t in merged.items()}
        if name == "minimal pairs":
            kinds = np.array(minimal()[2])
            result["minimal_by_kind"] = {c: {k: round(float(np.array(by_t["0.9"])[(kinds == k) & ~truth].mean()), 3)
                                              for k in sorted(set(kinds))} for c, by_t in merged.items()}

    if args.rewrites:
        from bench.paraphrases import build

        para = build(args.rewrites, progress=False)
        order = np.random.default_rng(args.seed).permutation(len(para.texts))
        texts = [para.texts[i] for i in order]
        position = {int(old): new for new, old in enumerate(order)}
        truth_pairs = {frozenset((position[a], position[b])) for a, b in para.pairs}
        rewrites = {}
        for encoder in (STATIC, MINILM):
            for label, verify in (("verify", True), ("verify: false", False), ("semhash", None)):
                runs = in_fresh_process(_rewrites, encoder, verify, texts)
                name = f"semhash / {encoder}" if verify is None else f"dedup_semantic / {encoder}, {label}"
                rewrites[name] = {t: pair_f1(r["pairs"], truth_pairs) for t, r in runs.items()}
        result["sets"]["rewrites"] = rewrites
        result["rewrite_pairs"] = len(truth_pairs)

    from bench.corpus import build_corpus

    docs = build_corpus(args.docs, seed=args.seed).texts
    speed = {}
    contenders = {f"dedup_semantic / {STATIC} (default, verify)": True,
                  f"dedup_semantic / {STATIC}, verify: false": False, f"semhash / {STATIC}": None}
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):  # round robin, the best of each kept: the 2 cores are shared
        for name, verify in contenders.items():
            if verify is None:
                run = in_fresh_process(_semhash_whole, docs, 0.9)
            else:
                run = in_fresh_process(_ours, STATIC, docs, [0.9], "auto", verify)["0.9"]
                run["removed"] = len(run["pairs"])
            seconds[name].append(run["seconds"])
            speed[name] = {"docs_per_s": round(args.docs / min(seconds[name]), 1), "removed": run["removed"],
                           "seconds": seconds[name]}
    print(speed, flush=True)
    result["speed"] = speed
    result["loadavg_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "meaning.json").write_text(json.dumps(result, indent=2))
    report(result)


def report(result: dict) -> None:
    for name, by_c in result["sets"].items():
        metric = "P / R / F1" + ("" if name == "rewrites" else " / different merged")
        print(f"\n**{name}** ({metric})\n\n| contender | {' | '.join(str(t) for t in THRESHOLDS)} | best F1 |")
        print(f"|---|{'---:|' * (len(THRESHOLDS) + 1)}")
        for contender, by_t in by_c.items():
            cells = []
            for t in THRESHOLDS:
                r = by_t[str(t)]
                cell = f"{r['precision']:.2f} / {r['recall']:.2f} / {r['f1']:.3f}"
                cells.append(cell + (f" / {r['merged_different']:.0%}" if "merged_different" in r else ""))
            best = max(r["f1"] for r in by_t.values())
            print(f"| {contender} | {' | '.join(cells)} | {best:.3f} |")
    for name, by_c in result.get("curves", {}).items():
        print(f"\n**{name}**, every threshold\n\n| contender | best F1 | at threshold | at precision | recall at precision 0.9 |")
        print("|---|---:|---:|---:|---:|")
        for contender, c in by_c.items():
            print(f"| {contender} | {c['best_f1']:.3f} | {c['at_threshold']:.2f} | {c['at_precision']:.2f}"
                  f" | {c['recall@0.9']:.2f} |")
    kinds = result.get("minimal_by_kind", {})
    if kinds:
        names = list(next(iter(kinds.values())))
        print(f"\n| minimal pairs merged @ 0.9 | {' | '.join(names)} |\n|---|{'---:|' * len(names)}")
        for contender, by_k in kinds.items():
            print(f"| {contender} | {' | '.join(f'{by_k[k]:.0%}' for k in names)} |")
    print("\n| contender (5,000 docs, threshold 0.9) | docs/s | removed |\n|---|---:|---:|")
    for name, s in result["speed"].items():
        print(f"| {name} | {s['docs_per_s']:,.0f} | {s['removed']} |")


if __name__ == "__main__":
    main()
