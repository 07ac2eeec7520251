"""The cost of evaluating one training candidate on this CPU, part by part.

    .venv/bin/python -m bench.bench_evaluation RUN_DIR [--config configs/demo.yaml] [--prompts 2,8]

RUN_DIR is a run that `curate all` (or `curate train`) trained. For each number of held-out
prompts (`eval.rouge_sample`), the candidate's last adapter is evaluated as the train flow does
it: eval loss before/after and greedy answers of base and tuned model (`evaluate_sft`),
BERTScore with the bundled MiniLM, the jury win-rate with the config's judges (a fresh answer
cache, then again from that cache: what a re-run costs) and the error analysis. Prints a
markdown table; writes JSON to bench/results/evaluation.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--prompts", default="2,8")
    args = parser.parse_args()

    from curation.core.inputs import load_config
    from curation.evaluation.errors import error_analysis
    from curation.evaluation.winrate import win_rate
    from curation.jury.panel import Jury
    from curation.llm.cache import AnswerCache
    from curation.llm.tokenizer import load_tokenizer
    from schemas.train import METHOD_STAGES
    from training.base_model import resolve_base_model
    from training.evaluate import bertscore, evaluate_sft
    from training.stages import SFT_COLUMNS, exported

    config = load_config(args.config)
    assert config.train is not None and config.jury is not None, "needs train: and jury: sections"
    test = exported(args.run_dir, "sft", SFT_COLUMNS)[1]
    assert test is not None, f"{args.run_dir}: the sft set has no test split"
    adapter = args.run_dir / "train" / METHOD_STAGES[config.train.method][-1] / "adapter"
    rows = []
    for n in (int(p) for p in args.prompts.split(",")):
        cfg = config.train.model_copy(update={"eval": config.train.eval.model_copy(update={"rouge_sample": n})})
        timings: dict[str, float] = {}
        start = time.perf_counter()
        _, generations = evaluate_sft(cfg, test, adapter)
        timings["evaluate_sft"] = _since(start)
        answers = [asdict(g) for g in generations]
        references = [g["reference"] for g in answers]
        start = time.perf_counter()
        for side in ("base", "tuned"):
            bertscore([g[side] for g in answers], references)
        timings["bertscore"] = _since(start)
        with tempfile.TemporaryDirectory() as cache:
            for name in ("win_rate", "win_rate_cached"):  # a fresh answer cache, then the same one
                start = time.perf_counter()
                win_rate(answers, Jury(config.jury, AnswerCache(Path(cache)), None))
                timings[name] = _since(start)
        tokenizer = load_tokenizer(str(resolve_base_model(cfg.base_model)))
        start = time.perf_counter()
        error_analysis(answers, tokenizer)
        timings["errors"] = _since(start)
        rows.append({"prompts": len(answers), "max_new_tokens": cfg.eval.max_new_tokens, **timings})
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evaluation.json").write_text(json.dumps(rows, indent=2))
    print("| prompts | max_new_tokens | evaluate_sft s | BERTScore s | win-rate s | win-rate cached s | errors s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['prompts']} | {r['max_new_tokens']} | {r['evaluate_sft']} | {r['bertscore']} | {r['win_rate']} |"
            f" {r['win_rate_cached']} | {r['errors']} |"
        )


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 1)


if __name__ == "__main__":
    main()
