"""What the `curate` CLI says about a training: per candidate its stages (rows, loss, adapter)
and evaluation, its win-rate against the base, the leaderboard and the winner."""

from __future__ import annotations

from pathlib import Path

from schemas.train_result import TrainSummary


def summary_text(summary: TrainSummary, run_dir: Path) -> str:
    lines = []
    for name, candidate in summary.candidates.items():
        prefix = "" if name == "main" else f"{name} "
        for stage, r in candidate.stages.items():
            loss = f"{r.train_loss:.4f}" if r.train_loss is not None else "-"
            rows = f"{r.train_rows} train rows"
            if r.dropped_rows:
                rows = f"{r.train_rows - r.dropped_rows} of {rows} ({r.dropped_rows} left out: too long for train.max_seq_length)"
            lines.append(f"{prefix}{stage}: {r.steps} steps on {rows}, train loss {loss}, adapter {r.adapter_dir}")
            for key, value in (r.eval or {}).items():
                lines.append(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
        if (win := candidate.win_rate) is not None and win["win_rate"] is not None:
            low, high = win["ci95"]
            lines.append(
                f"{prefix}win-rate vs base: {win['win_rate']:.3f} (95% CI {low:.3f}-{high:.3f};"
                f" win {win['win']} / tie {win['tie']} / loss {win['loss']})"
            )
    if len(summary.leaderboard) > 1:
        lines.append(f"leaderboard by {', then '.join(summary.select_by)}:")
        for row in summary.leaderboard:
            figures = ", ".join(f"{k} {v:.4f}" for k, v in row.model_dump().items() if isinstance(v, float))
            lines.append(f"  {row.rank}. {row.name}: {figures or 'no metrics'}")
    lines.append(f"best: {summary.best} -> {run_dir}/train/best")
    lines.append(f"summary: {run_dir}/train/summary.json")
    return "\n".join(lines)
