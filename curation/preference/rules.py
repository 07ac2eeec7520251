"""Building a preference pair (chosen, rejected) from the candidate answers to one prompt.

`choose_pair` rules, applied in this order:

1. Merge: candidates whose stripped texts are equal are one candidate. The first in input order
   is kept; a score, human or source rank it lacks is taken from the first duplicate that has one.
   Fewer than 2 distinct candidates -> "fewer_than_two_candidates".
2. Ranking. "human_then_jury" uses "human" when at least 2 candidates have a human rank,
   else "jury" (a human tie does not fall back to the jury: the humans said they are equal).
   - "jury": only scored candidates count (a score of None or NaN is unscored); fewer than 2
     -> "unscored". chosen = the highest score (first in input order among equals). If the
     highest score equals the lowest -> "tie". rejected = the lowest score (first in input
     order among equals) for "lowest", or for "random_lower" a uniformly random candidate
     scored strictly below chosen.
   - "human": only candidates with a human rank count (0 = best); fewer than 2 ->
     "no_human_ranks". chosen = the smallest rank, rejected = the largest ("lowest") or a
     uniformly random candidate ranked strictly worse than chosen ("random_lower"), each the
     first in input order among equal ranks. All ranks equal -> "tie".
   - "source": as "human", with the rank of the candidate's input file in `source_order`
     (0 = best); fewer than 2 ranked -> "no_source_ranks".
3. Thresholds. "jury": margin = chosen.score - rejected.score below min_margin ->
   "margin_below_min" (checked first), then chosen.score below min_chosen_score ->
   "chosen_below_min". "human": min_margin is not applied (ranks are not scores);
   min_chosen_score is, when the chosen candidate has a jury score. The margin is reported when
   both are scored, and is negative when the jury disagrees with the humans.

A decision without a pair has chosen = rejected = None, and keeps `ranking` (the ranking that
was tried, None when none was) and `margin` (when computed) for the report. The only randomness
is `rng` (random_lower), so a decision is deterministic given its state.

Position bias: `pairwise_verdict` combines a judge's two comparisons of A and B shown in both
orders, and `shuffled_order` gives each item its own reproducible order of answers.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

Ranking = Literal["jury", "human", "human_then_jury", "source"]
RejectedRule = Literal["lowest", "random_lower"]

# Scores are means of judges' integers, and their differences are inexact:
# (1+2+5)/3 - (1+1+3)/3 is 0.9999999999999998, which must pass a margin of 1.
_MARGIN_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Candidate:
    text: str
    origin: str  # "data:<record id>", "endpoint <model>", "local t=0.7", ...
    score: float | None = None  # jury score (None = unscored)
    human_rank: int | None = None  # 0 = best (oasst ranks)
    source_rank: int | None = None  # 0 = best: its input file's place in preference.source_order


@dataclass(frozen=True)
class PairDecision:
    chosen: Candidate | None
    rejected: Candidate | None
    reason: str | None  # why there is no pair; None when a pair was built
    ranking: str | None  # "human" | "jury" | "source"
    margin: float | None  # chosen.score - rejected.score when both scored


def _merge_duplicates(candidates: Sequence[Candidate]) -> list[Candidate]:
    merged: dict[str, Candidate] = {}
    for candidate in candidates:
        key = candidate.text.strip()
        kept = merged.get(key)
        if kept is None:
            merged[key] = candidate
        else:
            merged[key] = replace(
                kept,
                score=kept.score if _scored(kept) else candidate.score,
                human_rank=kept.human_rank if kept.human_rank is not None else candidate.human_rank,
                source_rank=kept.source_rank if kept.source_rank is not None else candidate.source_rank,
            )
    return list(merged.values())


def _scored(candidate: Candidate) -> bool:
    # NaN is how the aggregation marks "no judge scored it".
    return candidate.score is not None and not math.isnan(candidate.score)


def _margin(chosen: Candidate, rejected: Candidate) -> float | None:
    if _scored(chosen) and _scored(rejected):
        return chosen.score - rejected.score
    return None


def _no_pair(reason: str, ranking: str | None, margin: float | None = None) -> PairDecision:
    return PairDecision(chosen=None, rejected=None, reason=reason, ranking=ranking, margin=margin)


def _pick(values: list[float], rejected_rule: RejectedRule, rng: random.Random) -> tuple[int, int] | None:
    """Indices of chosen (the largest value) and rejected (the smallest, or a random strictly
    smaller one); the first in input order among equals. None when all values are equal."""
    best, worst = max(values), min(values)
    if best == worst:
        return None
    if rejected_rule == "lowest":
        return values.index(best), values.index(worst)
    return values.index(best), rng.choice([i for i, v in enumerate(values) if v < best])


def _jury_pair(
    candidates: list[Candidate],
    rejected_rule: RejectedRule,
    min_margin: float,
    min_chosen_score: float | None,
    rng: random.Random,
) -> PairDecision:
    scored = [c for c in candidates if _scored(c)]
    if len(scored) < 2:
        return _no_pair("unscored", "jury")
    picked = _pick([c.score for c in scored], rejected_rule, rng)
    if picked is None:
        return _no_pair("tie", "jury", 0.0)
    chosen, rejected = (scored[i] for i in picked)
    margin = chosen.score - rejected.score
    if margin < min_margin - _MARGIN_TOLERANCE:
        return _no_pair("margin_below_min", "jury", margin)
    if min_chosen_score is not None and chosen.score < min_chosen_score:
        return _no_pair("chosen_below_min", "jury", margin)
    return PairDecision(chosen=chosen, rejected=rejected, reason=None, ranking="jury", margin=margin)


def _ranked_pair(
    ranked: list[Candidate],
    ranks: list[int],
    ranking: str,
    rejected_rule: RejectedRule,
    min_chosen_score: float | None,
    rng: random.Random,
) -> PairDecision:
    # Rank 0 is best: negated, the best is the largest value, as for scores.
    picked = _pick([-r for r in ranks], rejected_rule, rng)
    if picked is None:
        return _no_pair("tie", ranking)
    chosen, rejected = (ranked[i] for i in picked)
    margin = _margin(chosen, rejected)
    if min_chosen_score is not None and _scored(chosen) and chosen.score < min_chosen_score:
        return _no_pair("chosen_below_min", ranking, margin)
    return PairDecision(chosen=chosen, rejected=rejected, reason=None, ranking=ranking, margin=margin)


def choose_pair(
    candidates: Sequence[Candidate],
    ranking: Ranking,
    rejected_rule: RejectedRule,
    min_margin: float,
    min_chosen_score: float | None,
    rng: random.Random,
) -> PairDecision:
    """The preference pair for one prompt's candidate answers (rules: see the module docstring)."""
    distinct = _merge_duplicates(candidates)
    if len(distinct) < 2:
        return _no_pair("fewer_than_two_candidates", None)
    if ranking == "source":
        by_file = [c for c in distinct if c.source_rank is not None]
        if len(by_file) < 2:
            return _no_pair("no_source_ranks", "source")
        return _ranked_pair(by_file, [c.source_rank for c in by_file], "source", rejected_rule, min_chosen_score, rng)
    ranked = [c for c in distinct if c.human_rank is not None]
    if ranking == "human" or (ranking == "human_then_jury" and len(ranked) >= 2):
        if len(ranked) < 2:
            return _no_pair("no_human_ranks", "human")
        return _ranked_pair(ranked, [c.human_rank for c in ranked], "human", rejected_rule, min_chosen_score, rng)
    return _jury_pair(distinct, rejected_rule, min_margin, min_chosen_score, rng)


def pairwise_verdict(score_ab: float | None, score_ba: float | None) -> Literal["a", "b", "tie"]:
    """Which of two answers a judge prefers, counting only what survives swapping their order.

    score_ab: the judge's preference for A when A is shown first; score_ba: its preference for
    A when A is shown second. Both are signed, positive = A better (e.g. P(A) - 0.5, or +1/-1).
    "a" when both are positive, "b" when both are negative; anything else (the verdict flips
    with the order, either side is 0, None or NaN) is "tie", because a preference that follows
    the position is position bias, not a preference.
    """
    if score_ab is None or score_ba is None:
        return "tie"
    if score_ab > 0 and score_ba > 0:
        return "a"
    if score_ab < 0 and score_ba < 0:
        return "b"
    return "tie"  # NaN compares False everywhere and lands here too


def shuffled_order(n: int, item_key: str, seed: int) -> list[int]:
    """A permutation of range(n) that is random across items but the same on every run.

    Seeded from sha256(seed, item_key): Python's hash() of a str changes per process.
    """
    digest = hashlib.sha256(f"{seed}\x00{item_key}".encode()).digest()
    order = list(range(n))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order
