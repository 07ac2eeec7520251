"""Training-free variants of the bundled static model (issue 23): does any reach MRPC test best
pair F1 0.82? Each variant is rebuilt from one raw distillation of the bundled all-MiniLM-L6-v2.

    .venv/bin/python -m bench.static_variants --mrpc-test PATH/msr_paraphrase_test.txt \\
        --mrpc-train PATH/msr_paraphrase_train.txt --sick PATH/SICK.txt [--out bench/results/static_variants.json]

The raw distillation (model2vec `distill` with no PCA, no SIF weights, float32 rows; one per
pooling mode, mean and CLS) goes to a scratch folder (`--scratch`, else a temporary one), never
to the model cache. Every variant post-processes those rows as `distill` does (model2vec's
`apply_pca`, then rows x Zipf SIF weight, then float16) and is centred as schemas/bundled.py
centres the default (the token-frequency-weighted mean row over the demo corpus, subtracted from
every normalised text vector), saved as a model2vec folder with its `common_direction.npy`, and
read by the stage's own encoder (curation.dedup.encoders.load_encoder) on whole texts, today's
default. What varies (VARIANTS): PCA dimensions (None / 128 / 256 / 384), the SIF coefficient
(None / 1e-3 / 1e-4 / 1e-5), the centring strength (the common direction x 0 / 0.5 / 1 / 1.5),
the top 2 or 8 principal directions removed from the token rows (after PCA its columns are the
principal directions, in order of variance) and CLS pooling in the distillation.

Per variant: best pair F1 over every threshold and recall at precision 0.9 (bench_meaning.curve)
on MRPC train with and without the verify veto (curation.dedup.verify.different_task), SICK
(bench.fit_pair_decision's paraphrase labels, with the veto) and MRPC test (with the veto), and
MRPC test's F1 at the threshold that was best on MRPC train; the share of the minimal pairs
(bench/data/minimal_pairs.jsonl) merged at 0.9 with the veto, different / same; the planted copies
found / other removals at 0.85 / 0.9 / 0.95 on bench.corpus.build_corpus(3000, seed=0) whole texts
(the stage's greedy walk, exhaustive). The default is also walked at 128 tokens a text (planted
only), the setting the earlier "Why the static model is centred" table was measured at.

Selection rule, fixed before MRPC test is read: the variant with the highest MRPC train best F1
with the veto (the stage's decision, on the same news-pair distribution as test), ties (equal to
3 decimals) broken by the higher SICK best F1. MRPC test is scored once per variant, and the
selected variant's test figure is the answer to "0.82?". A bootstrap of the default's MRPC test
best F1 (500 resamples of the test pairs, seeded) gives the noise of the test set itself.

Writes `--out` (JSON) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.bench_meaning import RESULTS, curve, minimal, mrpc, prf
from bench.fit_pair_decision import sick

PLANTED_THRESHOLDS = (0.85, 0.9, 0.95)
PLANTED_DOCS = 3000
MINIMAL_THRESHOLD = 0.9
BOOTSTRAP = 500
TARGET = 0.82


@dataclass(frozen=True)
class Variant:
    name: str
    pooling: str = "mean"  # how distill pools a token's transformer output: "mean" or CLS ("first")
    pca: int | None = 256
    sif: float | None = 1e-4
    centring: float = 1.0  # times the common direction subtracted from each text vector
    drop_top: int = 0  # leading principal directions zeroed in the token rows (needs pca)


DEFAULT = Variant("default (pca 256, zipf SIF 1e-4, centred)")
VARIANTS = (
    DEFAULT,
    Variant("pca None", pca=None), Variant("pca 128", pca=128), Variant("pca 384", pca=384),
    Variant("zipf SIF None", sif=None), Variant("zipf SIF 1e-3", sif=1e-3), Variant("zipf SIF 1e-5", sif=1e-5),
    Variant("centring 0", centring=0.0), Variant("centring 0.5", centring=0.5), Variant("centring 1.5", centring=1.5),
    Variant("token rows minus top 2 directions", drop_top=2), Variant("token rows minus top 8 directions", drop_top=8),
    Variant("CLS pooling", pooling="first"),
)


def raw_distillation(scratch: Path, pooling: str) -> Path:
    """The bundled MiniLM distilled with no post-processing (reused when the scratch folder has it)."""
    folder = scratch / f"raw-{pooling}"
    if not (folder / "config.json").is_file():
        from model2vec.distill import distill

        from schemas.bundled import bundled_minilm_dir

        model = distill(model_name=str(bundled_minilm_dir()), pca_dims=None, sif_coefficient=None,
                        quantize_to="float32", pooling=pooling)
        model.save_pretrained(folder)
    return folder


def reference_counts(raw_folder: Path) -> np.ndarray:
    """Token counts of the demo corpus's running text, which the common direction is weighted by
    (as schemas.bundled counts them when it centres the default)."""
    from model2vec import StaticModel

    from schemas.bundled import reference_texts, reference_token_counts

    model = StaticModel.from_pretrained(raw_folder)
    return reference_token_counts(model.tokenizer, len(model.embedding), reference_texts())


def build(variant: Variant, raw_folder: Path, counts: np.ndarray, folder: Path) -> Path:
    """`variant` as a model2vec folder with its common direction, from the raw rows."""
    from model2vec import StaticModel
    from model2vec.distill.inference import apply_pca, compute_weights
    from model2vec.quantization import DType, quantize_embeddings

    from schemas.bundled import COMMON_DIRECTION

    raw = StaticModel.from_pretrained(raw_folder)
    rows = np.array(raw.embedding, np.float32)
    if variant.pca is not None:
        rows = apply_pca(rows, variant.pca)
    if variant.drop_top:
        assert variant.pca is not None, "the principal directions are the PCA'd rows' columns"
        rows[:, : variant.drop_top] = 0
    rows = rows * compute_weights(len(rows), sif_coefficient=variant.sif)[:, None]
    rows = np.asarray(quantize_embeddings(rows, DType.Float16), np.float32)  # as distill, then the cache
    common = (counts @ rows / counts.sum()).astype(np.float32)
    config = dict(raw.config) | {"apply_pca": variant.pca, "sif_coefficient": variant.sif, "hidden_dim": rows.shape[1]}
    StaticModel(vectors=rows, tokenizer=raw.tokenizer, config=config, normalize=True).save_pretrained(folder)
    np.save(folder / COMMON_DIRECTION, variant.centring * common)
    return folder


@dataclass
class PairSet:
    pairs: list[tuple[str, str]]
    truth: np.ndarray
    vetoed: np.ndarray


def pair_sets(args: argparse.Namespace) -> dict[str, PairSet]:
    from curation.dedup.verify import different_task

    labelled = {"MRPC train": mrpc(args.mrpc_train), "SICK": sick(args.sick), "MRPC test": mrpc(args.mrpc_test),
                "minimal": minimal()[:2]}
    return {name: PairSet(pairs, truth, np.array([different_task(a, b) is not None for a, b in pairs]))
            for name, (pairs, truth) in labelled.items()}


def encode(folder: Path, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
    """The stage's encoder on the variant's folder (max_tokens None: whole texts, the default)."""
    from curation.dedup.encoders import load_encoder

    return load_encoder(str(folder), max_tokens).encode(texts)


def encode_distinct(folder: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """Each distinct text's vector (SICK repeats its sentences)."""
    distinct = list(dict.fromkeys(texts))
    return dict(zip(distinct, encode(folder, distinct), strict=True))


def cosines(vectors: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> np.ndarray:
    return np.array([float(vectors[a] @ vectors[b]) for a, b in pairs])


def planted(vectors: np.ndarray, copies: set[int]) -> dict[str, list[int]]:
    """Per threshold: [planted copies removed, other removals] of the stage's greedy walk."""
    from bench.bench_semantic import planted_removals

    return {t: list(counts) for t, counts in planted_removals(vectors, copies, PLANTED_THRESHOLDS).items()}


def score(sets: dict[str, PairSet], vectors: dict[str, np.ndarray]) -> tuple[dict, np.ndarray]:
    """A variant's figures on the pair sets, and its MRPC test scores with the veto (-inf: vetoed)."""
    out: dict = {}
    scores = {}
    for name, s in sets.items():
        cos = cosines(vectors, s.pairs)
        scores[name] = np.where(s.vetoed, -np.inf, cos)
        if name == "minimal":
            merged = scores[name] >= MINIMAL_THRESHOLD
            out[name] = {"different": round(float(merged[~s.truth].mean()), 3), "same": round(float(merged[s.truth].mean()), 3)}
        else:
            out[name] = {"veto": curve(scores[name], s.truth)}
            if name == "MRPC train":
                out[name]["no veto"] = curve(cos, s.truth)
    at = out["MRPC train"]["veto"]["at_threshold"]
    out["MRPC test"]["at MRPC train's threshold"] = prf(scores["MRPC test"] >= at, sets["MRPC test"].truth) | {"threshold": at}
    return out, scores["MRPC test"]


def bootstrap(score: np.ndarray, truth: np.ndarray, seed: int) -> dict:
    """95% percentile interval of best F1 over BOOTSTRAP resamples of the pairs."""
    rng = np.random.default_rng(seed)
    best = np.array([curve(score[i], truth[i])["best_f1"] for i in (rng.integers(0, len(score), len(score))
                                                                     for _ in range(BOOTSTRAP))])
    return {"resamples": BOOTSTRAP, "seed": seed, "low": round(float(np.percentile(best, 2.5)), 3),
            "high": round(float(np.percentile(best, 97.5)), 3), f"share >= {TARGET}": round(float((best >= TARGET).mean()), 3)}


def selected(rows: dict[str, dict]) -> str:
    """The selection rule of the docstring: MRPC train best F1 with the veto, then SICK's."""
    return max(rows, key=lambda v: (rows[v]["MRPC train"]["veto"]["best_f1"], rows[v]["SICK"]["veto"]["best_f1"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mrpc-test", type=Path, required=True)
    parser.add_argument("--mrpc-train", type=Path, required=True)
    parser.add_argument("--sick", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=RESULTS / "static_variants.json")
    parser.add_argument("--scratch", type=Path, help="folder for the raw distillations (reused) and the variants")
    parser.add_argument("--seed", type=int, default=0, help="corpus and bootstrap seed")
    args = parser.parse_args()
    for path in (args.mrpc_test, args.mrpc_train, args.sick):
        if not path.is_file():
            parser.error(f"{path} is not a file (bench/data/README.md says where to get it)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.corpus import build_corpus

    started = time.perf_counter()
    result: dict = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()], "variants": {}}
    sets = pair_sets(args)
    texts = [t for s in sets.values() for pair in s.pairs for t in pair]
    corpus = build_corpus(PLANTED_DOCS, seed=args.seed)
    copies = set(corpus.pairs["b"].to_list())
    with tempfile.TemporaryDirectory(prefix="static-variants-") as temporary:
        scratch = args.scratch or Path(temporary)
        scratch.mkdir(parents=True, exist_ok=True)
        raws = {p: raw_distillation(scratch, p) for p in sorted({v.pooling for v in VARIANTS})}
        counts = {p: reference_counts(folder) for p, folder in raws.items()}
        for i, variant in enumerate(VARIANTS):
            folder = build(variant, raws[variant.pooling], counts[variant.pooling], scratch / f"variant-{i}")
            row, test_score = score(sets, encode_distinct(folder, texts))
            row["planted"] = planted(encode(folder, corpus.texts), copies)
            result["variants"][variant.name] = {"settings": asdict(variant)} | row
            if variant == DEFAULT:
                result["bootstrap MRPC test best F1 (default)"] = bootstrap(test_score, sets["MRPC test"].truth, args.seed)
                result["default planted at 128 tokens"] = planted(encode(folder, corpus.texts, 128), copies)
            print(line(variant.name, result["variants"][variant.name]), flush=True)
    choice = selected(result["variants"])
    test = result["variants"][choice]["MRPC test"]["veto"]["best_f1"]
    result["selected on MRPC train + SICK"] = {"variant": choice, "MRPC test best F1": test, f"reaches {TARGET}": test >= TARGET}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    report(result)


def _cell(c: dict) -> str:
    return f"{c['best_f1']:.3f} / {c['recall@0.9']:.2f}"


def _planted_cell(by_t: dict[str, list[int]]) -> str:
    return ", ".join(f"{found}/{other}" for found, other in by_t.values())


def line(name: str, row: dict) -> str:
    test = row["MRPC test"]
    at_train = test["at MRPC train's threshold"]["f1"]
    return (f"| {name} | {_cell(row['MRPC train']['veto'])} | {_cell(row['MRPC train']['no veto'])}"
            f" | {row['SICK']['veto']['best_f1']:.3f} | {_cell(test['veto'])} | {at_train:.3f}"
            f" | {row['minimal']['different']:.2f} / {row['minimal']['same']:.2f} | {_planted_cell(row['planted'])} |")


def report(result: dict) -> None:
    print("\nCells: best F1 over every threshold / recall at precision 0.9; minimal: merged at 0.9 with the veto,"
          " different / same; planted: found/other at 0.85, 0.9, 0.95 (3,000 docs, whole texts)\n")
    print("| variant | MRPC train, veto | train, no veto | SICK best F1 | MRPC test, veto | test F1 at train's threshold"
          " | minimal | planted |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in result["variants"].items():
        print(line(name, row))
    b = result["bootstrap MRPC test best F1 (default)"]
    print(f"\ndefault's MRPC test best F1, bootstrap ({b['resamples']} resamples): 95% interval"
          f" [{b['low']:.3f}, {b['high']:.3f}], share of resamples >= {TARGET}: {b[f'share >= {TARGET}']:.2f}")
    print(f"default at 128 tokens a text, planted: {_planted_cell(result['default planted at 128 tokens'])}")
    s = result["selected on MRPC train + SICK"]
    print(f"selected on MRPC train + SICK: {s['variant']}, MRPC test best F1 {s['MRPC test best F1']:.3f}"
          f" ({'reaches' if s[f'reaches {TARGET}'] else 'below'} {TARGET})")
    print(f"{result['seconds']:.0f} s; load average before {result['loadavg_before']}, after {result['loadavg_after']}")


if __name__ == "__main__":
    main()
