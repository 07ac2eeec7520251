"""Can a cross-encoder, fine-tuned offline from the bundled all-MiniLM-L6-v2 on labelled pairs that
are not MRPC, decide semantic dedup's candidate pairs better than the static cosine and the lexical
veto (issue 23)? A measurement: nothing here is used by the product.

    .venv/bin/python -m bench.cross_encoder --sts-dir STS --sick SICK.txt --mrpc-test msr_paraphrase_test.txt \\
        [--mrpc-train msr_paraphrase_train.txt]

Training sets (none stored here; bench/data/README.md says where each comes from and its licence):
- **STS benchmark** (`sts-train.csv` / `sts-dev.csv`, tab-separated: genre, file, year, id, score
  0-5, sentence 1, sentence 2), **without its MSRpar pairs** (STS 2012's MSRpar sentences are
  MRPC's); the target is score / 5, a soft label;
- **SICK** TRAIN (target 1 when each sentence entails the other, else 0: its contradictions share
  nearly every word, the failure dedup must avoid).
The threshold is fixed on their dev splits (STS dev without MSRpar, positive at score >= 4; SICK
TRIAL, mutual entailment): the lowest score at which dev precision is >= 0.9. MRPC test is only
scored. `--mrpc-train` adds one comparison model trained with MRPC's train split too (it is the
benchmark's own distribution: not adoptable).

The model: AutoModelForSequenceClassification on the bundled MiniLM body with a fresh one-logit
head, binary cross-entropy on the (soft) targets, AdamW (lr 5e-5), linear warm-up and decay, one
epoch over `--max-pairs` pairs drawn from STS + SICK (seeded), batches of 16 of similar length,
each side first at random (the decision must not depend on which record came first), max 128
tokens, the embeddings and the lowest `--frozen-layers` layers left as they are (the 2 shared
cores: a step of the whole model cost ~4 s), fixed seed, 2 torch threads. Built once into
.cache/models/bench-minilm-cross-<settings> (a rerun reuses it; its scores are cached too).

Scored on MRPC test and the minimal pairs (SICK TEST only for the default: the model trained on
SICK's train split): the current default (static cosine, then the verify veto; bench_meaning's
contender), the cross-encoder alone, the cross-encoder after the veto, and the cascade the stage
would run (static cosine >= a candidate threshold, the veto, then the cross-encoder). Writes
bench/results/cross_encoder_<settings>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

from bench.bench_meaning import RESULTS, STATIC, CachedEncoder, curve, minimal, mrpc, prf

MAX_LENGTH = 128
DEV_PRECISION = 0.9
STS_POSITIVE = 4.0  # STS 4: "mostly equivalent, some unimportant details differ"
TIMED = 200  # MRPC pairs scored on the clock
CANDIDATES = (0.5, 0.7, 0.9)  # static-cosine candidate thresholds of the cascade (0.9: the default)
Pairs = list[tuple[str, str]]


def sts(path: Path) -> tuple[Pairs, np.ndarray]:
    """STS benchmark pairs without MSRpar (MRPC's sentences), and their scores 0-5."""
    pairs, score = [], []
    for line in path.open(encoding="utf-8"):
        cols = line.rstrip("\n").split("\t")
        if len(cols) < 7 or cols[1] == "MSRpar":
            continue
        pairs.append((cols[5], cols[6]))
        score.append(float(cols[4]))
    return pairs, np.array(score)


def sick(path: Path, split: str) -> tuple[Pairs, np.ndarray]:
    """SICK pairs of one SemEval split; True when each sentence entails the other."""
    rows = [line.rstrip("\r\n").split("\t") for line in path.open(encoding="utf-8")][1:]
    rows = [r for r in rows if r[11].strip() == split]
    return [(r[1], r[2]) for r in rows], np.array([r[5] == "A_entails_B" and r[6] == "B_entails_A" for r in rows])


def train(name: str, pairs: Pairs, targets: np.ndarray, epochs: int, seed: int, frozen: int,
          start: str | None = None) -> tuple[Path, float]:
    """Fine-tune a one-logit cross-encoder from the bundled MiniLM into .cache/models/<name>
    (kept: a second run reuses it). The embeddings and the lowest `frozen` of the 6 layers stay as
    they are (a step costs ~4 s of a shared core with all of them trained). Returns its folder and
    the training seconds (0 when reused)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from schemas.bundled import bundled_minilm_dir, cache_dir

    target = cache_dir() / "models" / name
    if (target / "model.safetensors").is_file():
        return target, 0.0
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    source = cache_dir() / "models" / start if start else bundled_minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1)
    for module in (model.bert.embeddings, *model.bert.encoder.layer[:frozen]):
        module.requires_grad_(False)
    batch = 16
    steps = epochs * ((len(pairs) + batch - 1) // batch)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=5e-5, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(seed)
    model.train()
    started, done = time.perf_counter(), 0
    for _ in range(epochs):
        order = rng.permutation(len(pairs))
        # Batches of similar length (sorted within runs of 50 batches), less padding to compute.
        run = 50 * batch
        order = np.concatenate([sorted(order[i:i + run], key=lambda j: len(pairs[j][0]) + len(pairs[j][1]))
                                for i in range(0, len(order), run)])
        starts = rng.permutation(np.arange(0, len(order), batch))
        for i in starts:
            idx = order[i:i + batch]
            flip = rng.random(len(idx)) < 0.5
            a = [pairs[j][1] if f else pairs[j][0] for j, f in zip(idx, flip, strict=True)]
            b = [pairs[j][0] if f else pairs[j][1] for j, f in zip(idx, flip, strict=True)]
            enc = tokenizer(a, b, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
            logits = model(**enc).logits.squeeze(-1)
            loss = loss_fn(logits, torch.tensor(targets[idx], dtype=torch.float32))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            done += 1
            if done % 100 == 0:
                print(f"  {name}: step {done}/{steps}, loss {loss.item():.3f}, "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
    seconds = time.perf_counter() - started
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target, seconds


class CrossScorer:
    """A built cross-encoder: each pair's probability of one meaning (sigmoid of the logit)."""

    def __init__(self, path: Path) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()

    def __call__(self, pairs: Pairs, batch: int = 32) -> np.ndarray:
        out = []
        with self.torch.inference_mode():
            for i in range(0, len(pairs), batch):
                chunk = pairs[i:i + batch]
                enc = self.tokenizer([p[0] for p in chunk], [p[1] for p in chunk], truncation=True,
                                     max_length=MAX_LENGTH, padding=True, return_tensors="pt")
                out.append(self.torch.sigmoid(self.model(**enc).logits.squeeze(-1)).numpy())
        return np.concatenate(out).astype(np.float64)


class ScoreCache:
    """A model's scores per set, kept in an .npz under bench/results (scoring is the slow part on
    2 shared cores; a rerun that only changes the report reads them back)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scores: dict[str, np.ndarray] = dict(np.load(path)) if path.is_file() else {}

    def __call__(self, name: str, pairs: Pairs, scorer: CrossScorer) -> np.ndarray:
        if name not in self.scores or len(self.scores[name]) != len(pairs):
            self.scores[name] = scorer(pairs)
            self.path.parent.mkdir(exist_ok=True)
            np.savez(self.path, **self.scores)  # type: ignore[arg-type]  # numpy's stub: a **dict could hold allow_pickle
        return self.scores[name]


def dev_threshold(score: np.ndarray, truth: np.ndarray, precision: float = DEV_PRECISION) -> float:
    """The lowest score at which the pairs scored at or above it reach `precision` (dev split)."""
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(truth[order])
    ok = np.flatnonzero(hits / np.arange(1, len(truth) + 1) >= precision)
    return float(score[order][ok.max()]) if len(ok) else 1.0


def evaluate(score: np.ndarray, truth: np.ndarray, threshold: float | None) -> dict:
    """Best F1 over every threshold, recall at precision 0.9, and P / R / F1 at `threshold`."""
    out = curve(score, truth)
    if threshold is not None:
        out |= {f"at_dev_{k}": v for k, v in prf(score >= threshold, truth).items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sts-dir", type=Path, required=True, help="folder with sts-train.csv and sts-dev.csv")
    parser.add_argument("--sick", type=Path, required=True)
    parser.add_argument("--mrpc-test", type=Path, required=True)
    parser.add_argument("--mrpc-train", type=Path, help="also train a comparison model with MRPC train (not adoptable)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-pairs", type=int, default=5000, help="training pairs drawn from STS + SICK (seeded)")
    parser.add_argument("--start", help="a model built by an earlier run (its .cache/models name) to train further")
    parser.add_argument("--frozen-layers", type=int, default=3, help="lowest MiniLM layers left as they are (of 6)")
    args = parser.parse_args()
    for path in (args.sts_dir / "sts-train.csv", args.sts_dir / "sts-dev.csv", args.sick, args.mrpc_test):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    import torch

    torch.set_num_threads(args.threads)
    from curation.dedup.verify import different_task

    result: dict = {"cpus": os.cpu_count(), "threads": args.threads, "loadavg_before": os.getloadavg(),
                    "epochs": args.epochs, "seed": args.seed, "frozen_layers": args.frozen_layers, "models": {}}
    sts_train, sts_train_score = sts(args.sts_dir / "sts-train.csv")
    sts_dev, sts_dev_score = sts(args.sts_dir / "sts-dev.csv")
    sick_train, sick_train_truth = sick(args.sick, "TRAIN")
    sick_dev, sick_dev_truth = sick(args.sick, "TRIAL")
    keep = np.sort(np.random.default_rng(args.seed).permutation(len(sts_train) + len(sick_train))[:args.max_pairs])
    train_pairs = [(sts_train + sick_train)[i] for i in keep]
    train_targets = np.concatenate([sts_train_score / 5, sick_train_truth.astype(float)])[keep]
    dev_pairs = sts_dev + sick_dev
    dev_truth = np.concatenate([sts_dev_score >= STS_POSITIVE, sick_dev_truth])
    tag = f"n{len(train_pairs)}-f{args.frozen_layers}-e{args.epochs}-s{args.seed}"
    if args.start:  # the model's name says what it was trained on before
        tag += "-after-" + args.start.removeprefix("bench-minilm-cross-")
    runs = {f"sts-sick-{tag}": (train_pairs, train_targets)}
    if args.mrpc_train:
        extra, extra_truth = mrpc(args.mrpc_train)
        runs[f"sts-sick-mrpctrain-{tag}"] = (
            train_pairs + extra, np.concatenate([train_targets, extra_truth.astype(float)]))
    sets = {"MRPC test": mrpc(args.mrpc_test), "SICK test": sick(args.sick, "TEST"),
            "minimal pairs": minimal()[:2]}
    result["sizes"] = {"train": {m: len(p) for m, (p, _) in runs.items()}, "dev": len(dev_pairs),
                       "dev_positive": int(dev_truth.sum())} | {name: len(p) for name, (p, _) in sets.items()}
    static = CachedEncoder(STATIC)
    base: dict[str, dict[str, np.ndarray]] = {}
    for name, (pairs, _) in sets.items():
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        base[name] = {"cosine": (static.encode(a) * static.encode(b)).sum(axis=1),
                      "veto": np.array([different_task(x, y) is not None for x, y in pairs])}
    dev_cos = (static.encode([p[0] for p in dev_pairs]) * static.encode([p[1] for p in dev_pairs])).sum(axis=1)
    dev_veto = np.array([different_task(x, y) is not None for x, y in dev_pairs])
    default_dev = dev_threshold(np.where(dev_veto, -np.inf, dev_cos), dev_truth)
    result["default"] = {"dev_threshold": round(default_dev, 3), "sets": {
        name: evaluate(np.where(base[name]["veto"], -np.inf, base[name]["cosine"]), truth, default_dev)
        | {"at_0.9": prf(~base[name]["veto"] & (base[name]["cosine"] >= 0.9), truth)}
        for name, (_, truth) in sets.items()}}

    for model_name, (pairs, targets) in runs.items():
        path, seconds = train(f"bench-minilm-cross-{model_name}", pairs, targets, args.epochs, args.seed,
                              args.frozen_layers, args.start)
        scorer = CrossScorer(path)
        cached = ScoreCache(RESULTS / f"cross_scores_{model_name}.npz")
        dev_score = cached("dev", dev_pairs, scorer)
        t_dev = dev_threshold(dev_score, dev_truth)
        entry: dict = {"path": str(path), "train_pairs": len(pairs), "train_seconds": round(seconds, 1),
                       "dev_threshold": round(t_dev, 4), "dev": evaluate(dev_score, dev_truth, t_dev), "sets": {}}
        # Scoring 1,000 MRPC pairs, timed apart from the cache (pairs of news sentences, ~50 words).
        started = time.perf_counter()
        scorer(sets["MRPC test"][0][:TIMED])
        entry["seconds_per_1000_pairs"] = round((time.perf_counter() - started) / TIMED * 1000, 1)
        entry["loadavg_timed"] = os.getloadavg()
        for name, (set_pairs, truth) in sets.items():
            if name == "SICK test":  # trained on SICK's train split: its test split is not held out
                continue
            score = cached(name, set_pairs, scorer)
            veto, cosine = base[name]["veto"], base[name]["cosine"]
            decided = {"cross-encoder alone": score, "veto, then cross-encoder": np.where(veto, -np.inf, score)}
            for c in CANDIDATES:
                decided[f"cascade: static >= {c}, veto, cross-encoder"] = np.where(veto | (cosine < c), -np.inf, score)
            entry["sets"][name] = {d: evaluate(s, truth, t_dev) for d, s in decided.items()}
            if name == "minimal pairs":
                for d, s in decided.items():
                    merged = s >= t_dev
                    entry["sets"][name][d] |= {"different_merged": round(float(merged[~truth].mean()), 3),
                                               "same_kept_apart": round(float(1 - merged[truth].mean()), 3)}
        result["models"][model_name] = entry
        print(json.dumps({model_name: entry}, indent=1), flush=True)
    minimal_truth = sets["minimal pairs"][1]
    merged = ~base["minimal pairs"]["veto"] & (base["minimal pairs"]["cosine"] >= 0.9)
    result["default"]["minimal_at_0.9"] = {"different_merged": round(float(merged[~minimal_truth].mean()), 3),
                                           "same_kept_apart": round(float(1 - merged[minimal_truth].mean()), 3)}
    merged = ~base["minimal pairs"]["veto"] & (base["minimal pairs"]["cosine"] >= default_dev)
    result["default"]["minimal_at_dev"] = {"different_merged": round(float(merged[~minimal_truth].mean()), 3),
                                           "same_kept_apart": round(float(1 - merged[minimal_truth].mean()), 3)}
    result["loadavg_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"cross_encoder_{tag}.json").write_text(json.dumps(result, indent=2))
    report(result)


def report(result: dict) -> None:
    print("\n| model / decision | MRPC best F1 (at score, precision) | MRPC P / R / F1 at dev threshold "
          "| MRPC recall @ P 0.9 | SICK test best F1 / R @ P 0.9 | minimal different merged / same kept apart |")
    print("|---|---:|---:|---:|---:|---:|")
    d = result["default"]["sets"]
    m = result["default"]["minimal_at_0.9"]
    r, at = d["MRPC test"], d["MRPC test"]["at_0.9"]
    print(f"| default: static cosine, veto (at 0.9, the default; dev threshold {result['default']['dev_threshold']:.2f}) "
          f"| {r['best_f1']:.3f} ({r['at_threshold']:.2f}, {r['at_precision']:.2f}) "
          f"| {at['precision']:.2f} / {at['recall']:.2f} / {at['f1']:.3f} (at 0.9); "
          f"{r['at_dev_precision']:.2f} / {r['at_dev_recall']:.2f} / {r['at_dev_f1']:.3f} (dev) | {r['recall@0.9']:.2f} "
          f"| {d['SICK test']['best_f1']:.3f} / {d['SICK test']['recall@0.9']:.2f} "
          f"| {m['different_merged']:.0%} / {m['same_kept_apart']:.0%} (at 0.9) |")
    for name, entry in result["models"].items():
        for decision, r in entry["sets"]["MRPC test"].items():
            mp = entry["sets"]["minimal pairs"][decision]
            print(f"| {name}: {decision} (dev threshold {entry['dev_threshold']:.3f}) "
                  f"| {r['best_f1']:.3f} ({r['at_threshold']:.2f}, {r['at_precision']:.2f}) "
                  f"| {r['at_dev_precision']:.2f} / {r['at_dev_recall']:.2f} / {r['at_dev_f1']:.3f} "
                  f"| {r['recall@0.9']:.2f} | (trained on SICK) "
                  f"| {mp['different_merged']:.0%} / {mp['same_kept_apart']:.0%} |")
        print(f"\n{name}: trained {entry['train_seconds']} s on {entry['train_pairs']} pairs, "
              f"{entry['seconds_per_1000_pairs']} s per 1,000 MRPC pairs scored")


if __name__ == "__main__":
    main()
