"""The report's data-ablation table (train/ablation/summary.json, training/ablation.py): per
variant its train rows, held-out loss, the jury's win-rate against the base with its interval,
the tuned answers' error-category rates with 95% Wilson intervals, and its differences to the
reference variant (loss, error rates) with their paired-bootstrap 95% intervals."""

from __future__ import annotations

from pathlib import Path

from curation.evaluation.errors import CATEGORIES
from curation.evaluation.winrate import wilson_interval
from schemas.train_result import AblationSummary


def ablation(path: Path) -> dict | None:
    if not path.is_file():
        return None
    summary: AblationSummary = AblationSummary.read(path)
    rows = []
    for name, variant in summary.variants.items():
        result, errors = variant.result, variant.result.errors
        tuned = errors["tuned"] if errors else None
        rates = {
            c: (tuned["counts"][c] / tuned["answers"], wilson_interval(tuned["counts"][c], tuned["answers"]))
            for c in CATEGORIES
            if tuned and tuned["answers"]
        }
        win = result.win_rate or {}
        rows.append(
            {
                "name": name,
                "train_rows": variant.data.train_rows,
                "reused": variant.reused,
                "eval_loss": result.metrics.eval_loss,
                "loss_versus": variant.versus.get("eval_loss"),
                "errors_versus": {c: d for c, d in variant.versus.items() if c != "eval_loss"},
                "win_rate": win.get("win_rate"),
                "ci95": win.get("ci95"),
                "errors": rates,
            }
        )
    return {"summary": summary, "rows": rows, "categories": CATEGORIES}
