"""Jury win-rate of the tuned model against its base, on the same held-out prompts.

Each prompt's two answers go to every distinct jury model through the pairwise machinery
(`curation.preference.pairwise`): judged in both orders, a verdict that follows the position is
a tie. With several models the majority verdict counts. The win-rate counts a tie as half a
win, with a 95% Wilson score interval; position consistency and both sides' answer lengths are
reported next to it, so a judge's position or length bias shows. The judges' answers go through
the run's answer cache, so a re-run asks nothing again.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from curation.jury.judge import load_rubric, render_conversation
from curation.jury.panel import Jury
from curation.preference.pairwise import Comparison, PairwiseJudge, position_stats

Z_95 = 1.959964
RUBRIC = "pairwise"
MAX_VERDICTS = 20  # per-prompt verdicts kept for the report


def win_rate(generations: Sequence[Mapping], jury: Jury, progress: bool = False) -> dict:
    """Win / tie / loss of `tuned` against `base` over `generations` (dicts with prompt turns,
    base and tuned answers); `unjudged` prompts (a judge answered nothing readable) are left out."""
    pairs = [(render_conversation(g["prompt"]), g["tuned"], g["base"]) for g in generations]
    models = {j.model.identity: j.model for j in jury.judges}  # several rubrics on one model: one comparison
    rubric = load_rubric(RUBRIC)
    by_model: list[list[Comparison]] = []
    for identity, model in models.items():
        judge = PairwiseJudge(identity, model, rubric, max_chars=jury.cfg.max_chars)
        by_model.append(judge.compare(pairs, progress=f"win-rate {identity}" if progress and pairs else None))
    outcome: Counter[str] = Counter()
    verdicts = []
    for i in range(len(pairs)):
        found = [comparisons[i] for comparisons in by_model]
        if all(c.a_first is None or c.a_second is None for c in found):
            outcome["unjudged"] += 1
            verdicts.append("unjudged")
            continue
        votes = Counter(c.verdict for c in found)
        verdict = "win" if votes["a"] > votes["b"] else "loss" if votes["b"] > votes["a"] else "tie"
        outcome[verdict] += 1
        verdicts.append(verdict)
    judged = outcome["win"] + outcome["tie"] + outcome["loss"]
    score = outcome["win"] + outcome["tie"] / 2
    return {
        "judges": list(models),
        "prompts": len(pairs),
        **{k: outcome[k] for k in ("win", "tie", "loss", "unjudged")},
        "win_rate": score / judged if judged else None,
        "ci95": wilson_interval(score, judged),
        **position_stats([c for comparisons in by_model for c in comparisons]),
        "mean_words": {side: _mean_words([g[side] for g in generations]) for side in ("base", "tuned")},
        "verdicts": verdicts[:MAX_VERDICTS],
    }


def wilson_interval(successes: float, n: int, z: float = Z_95) -> list[float] | None:
    """The Wilson score interval of a proportion (better than p +- z*se for small n or p near 0/1)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _mean_words(answers: Sequence[str]) -> float | None:
    return round(sum(len(a.split()) for a in answers) / len(answers), 2) if answers else None
