"""Pairwise judging in both orders: a preference that follows the position is a tie.

A comparison rubric (bundled: rubrics/pairwise.jinja) shows the prompt and two answers and asks
for 1 (the first is better) or 2 (the second is). `RubricJudge` reads it as a rating on a 1..2
scale - with log-probs the G-Eval expectation, so 1.5 - rating is the judge's signed preference
for the answer shown first. Every pair is judged as (A, B) and again as (B, A);
`pairwise_verdict` keeps only a preference that survives the swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from curation.jury.judge import JudgeItem, RubricJudge
from curation.llm.types import ChatModel
from curation.preference.rules import pairwise_verdict

Verdict = Literal["a", "b", "tie"]


@dataclass(frozen=True)
class Comparison:
    verdict: Verdict  # "a": A is better in both orders, "b": B is, "tie": anything else
    a_first: float | None  # preference for A when shown first (+ = A better); None = unreadable
    a_second: float | None  # preference for A when shown second
    raw: tuple[str | None, str | None]  # the judge's two answers, kept for the report


class PairwiseJudge:
    def __init__(self, name: str, model: ChatModel, rubric: str, *, max_chars: int = 6000, reasks: int = 2) -> None:
        self.name = name
        self.judge = RubricJudge(name, model, rubric, scale_max=2, max_chars=max_chars, reasks=reasks, comparison=True)

    def compare(self, pairs: Sequence[tuple[str, str, str]], progress: str | None = None) -> list[Comparison]:
        """(prompt, A, B) -> one Comparison per pair, in order; both orders go in one model call."""
        items = [JudgeItem(p, a, b) for p, a, b in pairs] + [JudgeItem(p, b, a) for p, a, b in pairs]
        ratings = self.judge.rate(items, progress=progress)
        n = len(pairs)
        comparisons = []
        for first, second in zip(ratings[:n], ratings[n:], strict=True):
            a_first = None if first.score is None else 1.5 - first.score
            a_second = None if second.score is None else second.score - 1.5
            comparisons.append(Comparison(pairwise_verdict(a_first, a_second), a_first, a_second, (first.raw, second.raw)))
        return comparisons


def position_stats(comparisons: Sequence[Comparison]) -> dict:
    """How consistent a judge is under swapping: the share of pairs with an order-independent
    verdict, and how often the answer shown first wins (0.5 = no position bias)."""
    # a_first: for the first-shown answer; -a_second: for B, which is shown first in the swap.
    shown = [c.a_first for c in comparisons if c.a_first] + [-c.a_second for c in comparisons if c.a_second]
    return {
        "comparisons": len(comparisons),
        "order_consistent": sum(c.verdict != "tie" for c in comparisons) / len(comparisons) if comparisons else None,
        "first_shown_wins": sum(s > 0 for s in shown) / len(shown) if shown else None,
    }
