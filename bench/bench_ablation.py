"""Does curation help training? A data ablation (train.ablation, issue 26) on a mixed set built
from public data: raw vs curated vs a random subset of raw as large as curated.

    .venv/bin/python -m bench.bench_ablation [--clean 400] [--steps 60] [--out DIR]

The mix (../shared/data): `--clean` Alpaca instruction pairs (LLaMA-Factory's alpaca_en_demo),
plus realistic junk in proportion: refusals (the clean prompts answered with a phrase of the
bundled refusal list), placeholder answers (N/A, <nooutput>), truncated answers (a clean answer
cut mid-sentence at a third of its words), exact and case/space-changed duplicates of clean
pairs, and benchmark items (GSM8K test questions with their answers, the config's
decontamination benchmark), and wrong-language records (Chinese Alpaca pairs of LLaMA-Factory's
alpaca_zh_demo, read from the fetched mirror /work/.mirror/hiyouga+LLaMA-Factory when it is
there: ../shared/data holds no non-English instruction data; without the mirror the mix has none).

The run: `curate all` with the demo's filters, exact + MinHash dedup, decontamination against
GSM8K and export (10% held out), then SFT of the bundled SmolLM2-135M-Instruct (LoRA, CPU) for
`--steps` optimizer steps on each variant (curated, raw, random, selected: `select:` keeps the
`--budget` longest-rendered curated records, radius diversity; random is as large), evaluated
on the same held-out rows of the curated set:
eval loss and the error categories of 32 greedy answers (no jury here: no win-rate, so the
verdict cannot call a difference beyond noise; the error rates carry 95% Wilson intervals).
Prints the table; writes bench/results/ablation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from curation.evaluation.winrate import wilson_interval

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ZH_MIRROR = Path("/work/.mirror/hiyouga+LLaMA-Factory/repo")
REFUSALS = Path(__file__).resolve().parents[1] / "curation" / "resources" / "refusal_phrases.txt"
PLACEHOLDERS = ["N/A", "<nooutput>", "n/a", "-", "<noinput>"]


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def mixed_set(clean: int, seed: int = 0) -> tuple[list[dict], dict[str, int]]:
    """Clean Alpaca pairs and junk of each kind (about a tenth of clean each), shuffled."""
    rng = random.Random(seed)
    alpaca = json.loads((SHARED / "sft" / "llamafactory_alpaca_en_demo.json").read_text())
    pairs = [(f"{r['instruction']}\n\n{r['input']}".strip(), r["output"]) for r in alpaca]
    good, spare = pairs[:clean], pairs[clean:]
    n = max(1, clean // 10)
    phrases = [p for p in REFUSALS.read_text().splitlines() if p and not p.startswith("#") and len(p.split()) >= 4]
    gsm8k = [json.loads(line) for line in (SHARED / "sft" / "gsm8k_test.jsonl").read_text().splitlines()[:n]]
    junk = {
        "refusal": [chat(q, f"{rng.choice(phrases).capitalize()} with that.") for q, _ in spare[:n]],
        "placeholder": [chat(q, rng.choice(PLACEHOLDERS)) for q, _ in spare[n : 2 * n]],
        "truncated": [chat(q, " ".join(a.split()[: max(3, len(a.split()) // 3)])) for q, a in spare[2 * n : 3 * n]],
        "duplicate": [chat(q, a) for q, a in rng.sample(good, n // 2)]
        + [chat(q.upper(), "  " + a.replace(" ", "  ")) for q, a in rng.sample(good, n - n // 2)],
        "benchmark": [chat(r["question"], r["answer"]) for r in gsm8k],
        "wrong_language": [chat(f"{r['instruction']}\n\n{r['input']}".strip(), r["output"]) for r in chinese()[:n]],
    }
    rows = [chat(q, a) for q, a in good] + [r for kind in junk.values() for r in kind]
    rng.shuffle(rows)
    return rows, {"clean": len(good), **{k: len(v) for k, v in junk.items()}}


def chinese() -> list[dict]:
    """LLaMA-Factory's alpaca_zh_demo from the fetched mirror (a git dir), or none."""
    if not ZH_MIRROR.is_dir():
        return []
    show = ["git", "--git-dir", str(ZH_MIRROR), "show", "HEAD:data/alpaca_zh_demo.json"]
    done = subprocess.run(show, capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else []


def trained_in(run: Path, name: str, variant: dict) -> Path:
    """The folder of the training a variant's result comes from: its own, or the one it reused
    ("candidate main": RUN_DIR/train, the bench trains one candidate; "variant raw")."""
    kind, _, other = (variant.get("reused") or f"variant {name}").partition(" ")
    return run / "train" if kind == "candidate" else run / "train" / "ablation" / other


def placeholders(variant: Path) -> tuple[int, int]:
    """Tuned answers that are a placeholder of the mix (N/A, <nooutput>, ...) or nothing but
    punctuation: the error analysis has no category for them."""
    rows = json.loads((variant / "generations.json").read_text())
    return sum(r["tuned"].strip() in PLACEHOLDERS or not any(c.isalnum() for c in r["tuned"]) for r in rows), len(rows)


def config(data: Path, args: argparse.Namespace) -> dict:
    steps = args.steps
    fast = {"max_steps": steps, "warmup_ratio": 0, "gradient_checkpointing": False, "batch_size": args.batch,
            "grad_accum": 1, "logging_steps": 10, "save_steps": steps}
    return {
        "inputs": [{"path": str(data)}],
        "filters": {
            "length": {"min_words": 3, "max_words": 4000, "roles": {"assistant": {"min_words": 1}}},
            "keywords": {"refusals": True},
            "repetition": {"max_dup_line_frac": 0.3, "max_top_ngram_frac": 0.2},
            "language": {"keep": ["en"]},
            "truncated": {},  # off by default; the mix's cut answers are junk the curation must remove
        },
        "dedup": {"exact": {}, "minhash": {"threshold": 0.8, "num_perm": 128, "ngram": 5}},
        "decontamination": {"benchmarks": [{"path": str(SHARED / "sft" / "gsm8k_test.jsonl"), "name": "gsm8k"}]},
        "select": {"budget": {"records": args.budget}, "score": {"length": 1}},
        "export": {"test_size": 0.1},
        "train": {
            "method": "sft", "max_seq_length": args.max_seq_length, "report_to": [], "sft": fast,
            "eval": {"rouge_sample": args.answers, "max_new_tokens": args.max_new_tokens},
            "ablation": {"variants": ["curated", "raw", "random", "selected"]},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", type=int, default=400)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--budget", type=int, default=250, help="records select keeps (selected; random as many)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--answers", type=int, default=32, help="held-out prompts answered (error rates)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, help="run directory (default: a temporary one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ablation-"))
    rows, mix = mixed_set(args.clean)
    data = work / "mix.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config(data, args)))
    run = args.out or work / "run"
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "all", str(path), "--out", str(run), "--no-progress"])
    if done.returncode:
        sys.exit(done.returncode)
    summary = json.loads((run / "train" / "ablation" / "summary.json").read_text())
    total = time.perf_counter() - began
    trainings = sum(sum(v["result"]["seconds"].values()) for v in summary["variants"].values())
    print(f"mix: {mix}; held-out rows: {len(summary['held_out_ids'])}; run {total:.0f} s, its trainings {trainings:.0f} s"
          f" ({total / trainings - 1:+.0%}); load average {os.getloadavg()[0]:.1f}\n")
    shown = ("refusal", "placeholder", "empty", "truncated", "repetitive", "wrong_language")
    print(f"| variant | train rows | eval loss | {' | '.join(shown)} |\n|{'---|' * (len(shown) + 3)}")
    table = {}
    for name, v in summary["variants"].items():
        tuned = v["result"]["errors"]["tuned"]
        counts = {**tuned["counts"], "placeholder": placeholders(trained_in(run, name, v))[0]}
        # No interval (None) for a variant without answers to rate
        rates = {c: (k, [round(x, 3) for x in ci] if (ci := wilson_interval(k, tuned["answers"])) else None)
                 for c, k in counts.items()}
        table[name] = {"train_rows": v["data"]["train_rows"], "eval_loss": v["result"]["metrics"]["eval_loss"],
                       "answers": tuned["answers"], "errors": rates, "seconds": v["result"]["seconds"]}
        cells = " | ".join(f"{rates[c][0]}/{tuned['answers']} {rates[c][1]}" for c in shown)
        print(f"| {name} | {table[name]['train_rows']} | {table[name]['eval_loss']:.4f} | {cells} |")
    print(f"\n{summary['verdict']}")
    RESULTS.mkdir(exist_ok=True)
    held_out = len(summary["held_out_ids"])
    out = {"mix": mix, "args": {k: str(v) for k, v in vars(args).items()}, "held_out": held_out, "seconds": round(total, 1),
           "trainings_seconds": round(trainings, 1), "variants": table, "verdict": summary["verdict"]}
    (RESULTS / "ablation.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
