"""Hand-checked cases for the jury's pure rules: aggregation and agreement, preference pairs,
position-bias helpers and jury distillation. No models, no Prefect."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest

from curation.jury.aggregate import (
    aggregate,
    krippendorff_alpha_ordinal,
    length_preference_rate,
    score_histogram,
    spread,
)
from curation.jury.distill import fit_scorer, sample_indices
from curation.preference.pairwise import Comparison, position_stats
from curation.preference.rules import Candidate, choose_pair, pairwise_verdict, shuffled_order

nan = np.nan

# Rows: three distinct scores; one judge; no judge; a 2-2-5 split; two judges that round to 5 and 1.
SCORES = np.array(
    [
        [1.0, 2.0, 4.0],
        [nan, 3.0, nan],
        [nan, nan, nan],
        [2.0, 2.0, 5.0],
        [4.6, 1.4, nan],
    ]
)


# ---- aggregation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("mean", [7 / 3, 3.0, nan, 3.0, 3.0]),
        ("median", [2.0, 3.0, nan, 2.0, 3.0]),
        ("min", [1.0, 3.0, nan, 2.0, 1.4]),
        # Row 0: 1, 2, 4 once each -> the lowest; row 4: 5 and 1 once each -> 1.
        ("majority", [1.0, 3.0, nan, 2.0, 1.0]),
    ],
)
def test_aggregate_methods_skip_failed_judges(method: str, expected: list[float]) -> None:
    np.testing.assert_allclose(aggregate(SCORES, method), expected)  # NaN positions must match


def test_majority_ties_go_to_the_lower_score_and_rounding_is_half_up() -> None:
    scores = np.array([[3, 4, 4, 3], [4, 4, 3, nan], [2.5, 2.5, 2.0, nan], [5, 1, 5, 1]], dtype=float)
    np.testing.assert_array_equal(aggregate(scores, "majority"), [3.0, 4.0, 3.0, 1.0])


def test_aggregate_all_nan_is_quiet_and_checks_its_input() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" from an all-NaN row
        for method in ("mean", "median", "majority", "min"):
            assert np.isnan(aggregate(np.full((2, 3), nan), method)).all()
        assert np.isnan(spread(np.full((2, 3), nan))).all()
    with pytest.raises(ValueError, match="n_items, n_judges"):
        aggregate(np.array([1.0, 2.0]), "mean")
    with pytest.raises(ValueError, match="unknown aggregate method"):
        aggregate(SCORES, "max")  # type: ignore[arg-type]


def test_spread() -> None:
    np.testing.assert_allclose(spread(SCORES), [3.0, 0.0, nan, 3.0, 3.2])


# ---- Krippendorff's alpha ------------------------------------------------------------------


def test_alpha_perfect_agreement_is_one_with_missing_scores_too() -> None:
    assert krippendorff_alpha_ordinal(np.array([[1, 1], [3, 3], [5, 5]], dtype=float), 5) == 1.0
    with_gaps = np.array([[1, 1, nan], [3, 3, 3], [5, nan, 5], [2, nan, nan]])
    assert krippendorff_alpha_ordinal(with_gaps, 5) == 1.0
    # Rounded (half up) and clipped onto 1..5 first: 0.6 -> 1, 1.4 -> 1, 2.6 -> 3, 3.2 -> 3.
    assert krippendorff_alpha_ordinal(np.array([[1.4, 0.6], [2.6, 3.2]]), 5) == 1.0


def test_alpha_hand_computed() -> None:
    """Items (1,1), (2,2), (1,2). Coincidences: o11 = 2, o22 = 2, o12 = o21 = 1, so n1 = n2 = 3,
    n = 6. Ordinal distance d12 = (n1 + n2 - (n1 + n2) / 2)^2 = 9.
    alpha = 1 - (n - 1) * sum(o_ck d_ck) / sum(n_c n_k d_ck) = 1 - 5 * (2 * 9) / (2 * 3 * 3 * 9)
          = 1 - 90 / 162 = 4/9. Unused scale values do not change an ordinal alpha."""
    scores = np.array([[1, 1], [2, 2], [1, 2]], dtype=float)
    assert krippendorff_alpha_ordinal(scores, 3) == pytest.approx(4 / 9)
    assert krippendorff_alpha_ordinal(scores, 9) == pytest.approx(4 / 9)


def test_alpha_textbook_example() -> None:
    """Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units,
    values 1..5 with gaps; the published ordinal alpha is 0.815."""
    by_observer = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
            [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
        ]
    )
    assert krippendorff_alpha_ordinal(by_observer.T, 5) == pytest.approx(0.815, abs=5e-4)


@pytest.mark.parametrize(
    "scores",
    [
        pytest.param([[1], [3], [5]], id="one judge"),
        pytest.param([[1, 2], [3, nan], [nan, 4]], id="one pairable unit"),
        pytest.param([[nan, nan], [nan, nan]], id="no scores"),
        pytest.param([[3, 3], [3, 3], [5, nan]], id="no variation among pairable scores"),
    ],
)
def test_alpha_undefined_is_none(scores: list[list[float]]) -> None:
    assert krippendorff_alpha_ordinal(np.array(scores, dtype=float), 5) is None


# ---- length preference, histogram ----------------------------------------------------------


def test_length_preference_rate() -> None:
    assert length_preference_rate([10, 5, 7], [3, 9, 7]) == pytest.approx((1 + 0 + 0.5) / 3)
    assert length_preference_rate([10, 12], [3, 4]) == 1.0
    assert length_preference_rate([], []) is None
    with pytest.raises(ValueError, match="2 chosen lengths but 1 rejected"):
        length_preference_rate([1, 2], [1])


def test_score_histogram_rounds_half_up_and_counts_unscored() -> None:
    histogram = score_histogram(np.array([1.0, 2.5, 2.49, nan, 5.0, 4.6, 5.2]), 5)
    assert histogram == {"1": 1, "2": 1, "3": 1, "4": 0, "5": 3, "unscored": 1}
    assert score_histogram(np.array([]), 3) == {"1": 0, "2": 0, "3": 0, "unscored": 0}


# ---- preference pairs ----------------------------------------------------------------------


def C(text: str, score: float | None = None, rank: int | None = None) -> Candidate:
    return Candidate(text=text, origin=f"o:{text}", score=score, human_rank=rank)


def pick(candidates, ranking="jury", rule="lowest", min_margin=0.0, min_chosen=None, seed=0):
    return choose_pair(candidates, ranking, rule, min_margin, min_chosen, random.Random(seed))


def texts(decision) -> tuple[str | None, str | None]:
    return (
        decision.chosen and decision.chosen.text,
        decision.rejected and decision.rejected.text,
    )


def test_duplicates_are_merged_before_counting() -> None:
    for ranking in ("jury", "human", "human_then_jury"):
        assert pick([], ranking).reason == "fewer_than_two_candidates"
        decision = pick([C("a", 5), C("  a\n", 1)], ranking)
        assert (decision.reason, decision.ranking, decision.chosen) == ("fewer_than_two_candidates", None, None)


def test_merge_keeps_the_first_and_fills_its_rank_and_score_from_duplicates() -> None:
    first = Candidate(" a ", "first", score=4.0)
    later = Candidate("a", "later", score=1.0, human_rank=1)
    decision = pick([first, later, C("b", 2.0, rank=0)], "human_then_jury")
    # Two ranked after the merge -> human: b (rank 0) over the merged a (rank 1, score 4).
    assert decision.ranking == "human"
    assert decision.rejected == Candidate(" a ", "first", score=4.0, human_rank=1)
    assert decision.margin == pytest.approx(-2.0)
    unscored_first = pick([Candidate("a", "first"), Candidate("a", "later", score=4.0), C("b", 2.0)])
    assert (unscored_first.chosen.origin, unscored_first.chosen.score) == ("first", 4.0)


def test_jury_needs_two_scored_candidates() -> None:
    for unscored in (None, nan):
        decision = pick([C("a", 4.0), C("b", unscored), C("c")])
        assert (decision.reason, decision.ranking, decision.chosen) == ("unscored", "jury", None)


def test_jury_lowest_takes_first_of_equal_best_and_worst() -> None:
    decision = pick([C("a", 2), C("b", 5), C("c", 1), C("d", 5), C("e", 1), C("f")])
    assert texts(decision) == ("b", "c")
    assert (decision.reason, decision.ranking, decision.margin) == (None, "jury", 4.0)


def test_jury_tie() -> None:
    decision = pick([C("a", 3.0), C("b", 3.0), C("c")])
    assert (decision.reason, decision.ranking, decision.margin) == ("tie", "jury", 0.0)


def test_jury_random_lower_is_uniform_over_strictly_lower_and_seeded() -> None:
    candidates = [C("a", 5), C("b", 4), C("c", 3), C("d", 5)]
    rejected = {texts(pick(candidates, rule="random_lower", seed=s))[1] for s in range(40)}
    assert rejected == {"b", "c"}  # never the other 5
    assert all(texts(pick(candidates, rule="random_lower", seed=s))[0] == "a" for s in range(5))
    assert pick(candidates, rule="random_lower", seed=7) == pick(candidates, rule="random_lower", seed=7)


def test_jury_margin_and_chosen_thresholds() -> None:
    below = pick([C("a", 4.0), C("b", 3.6)], min_margin=0.5)
    assert (below.reason, below.chosen) == ("margin_below_min", None)
    assert below.margin == pytest.approx(0.4)
    assert pick([C("a", 4.0), C("b", 3.5)], min_margin=0.5).reason is None  # the bound passes
    # Means of judges' integers: (1+2+5)/3 - (1+1+3)/3 = 0.9999999999999998 is a margin of 1.
    assert pick([C("a", np.mean([1, 2, 5])), C("b", np.mean([1, 1, 3]))], min_margin=1.0).reason is None
    assert pick([C("a", 3.0), C("b", 1.0)], min_chosen=3.5).reason == "chosen_below_min"
    assert pick([C("a", 3.5), C("b", 1.0)], min_chosen=3.5).reason is None
    # The margin is checked first.
    assert pick([C("a", 3.0), C("b", 2.8)], min_margin=0.5, min_chosen=4.0).reason == "margin_below_min"


def test_human_ranks() -> None:
    candidates = [C("a", rank=2), C("b", rank=0), C("c", rank=1), C("d", 5.0)]
    decision = pick(candidates, "human")
    assert texts(decision) == ("b", "a")
    assert (decision.reason, decision.ranking, decision.margin) == (None, "human", None)
    rejected = {texts(pick(candidates, "human", "random_lower", seed=s))[1] for s in range(40)}
    assert rejected == {"a", "c"}
    assert pick([C("a", rank=1), C("b", rank=1)], "human").reason == "tie"
    no_ranks = pick([C("a", 5.0, rank=0), C("b", 1.0)], "human")
    assert (no_ranks.reason, no_ranks.ranking) == ("no_human_ranks", "human")


def test_human_ignores_min_margin_but_applies_min_chosen_score_when_scored() -> None:
    close = pick([C("a", 3.0, rank=0), C("b", 2.9, rank=1)], "human", min_margin=1.0)
    assert (close.reason, texts(close)) == (None, ("a", "b"))
    assert close.margin == pytest.approx(0.1)
    low = pick([C("a", 2.0, rank=0), C("b", 5.0, rank=1)], "human", min_chosen=3.0)
    assert (low.reason, low.ranking, low.margin) == ("chosen_below_min", "human", -3.0)
    unscored = pick([C("a", rank=0), C("b", 1.0, rank=1)], "human", min_chosen=3.0)
    assert (unscored.reason, unscored.margin) == (None, None)


def test_human_then_jury() -> None:
    one_ranked = pick([C("a", 2.0, rank=0), C("b", 4.0), C("c", 1.0)], "human_then_jury")
    assert (one_ranked.ranking, texts(one_ranked)) == ("jury", ("b", "c"))
    # Two ranks, equal: a human tie, not a fall-back to the jury.
    tied = pick([C("a", 5.0, rank=0), C("b", 1.0, rank=0)], "human_then_jury")
    assert (tied.reason, tied.ranking) == ("tie", "human")


# ---- position bias -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ab", "ba", "verdict"),
    [
        (0.3, 0.2, "a"),
        (-0.1, -0.4, "b"),
        (0.3, -0.2, "tie"),  # the preference follows the position
        (-1.0, 1.0, "tie"),
        (0.0, 0.5, "tie"),
        (None, 0.5, "tie"),
        (0.5, None, "tie"),
        (nan, 0.3, "tie"),
    ],
)
def test_pairwise_verdict_needs_both_orders_to_agree(ab: float | None, ba: float | None, verdict: str) -> None:
    assert pairwise_verdict(ab, ba) == verdict


def test_shuffled_order() -> None:
    order = shuffled_order(6, "item-1", seed=0)
    assert sorted(order) == list(range(6))
    assert order == shuffled_order(6, "item-1", seed=0)
    assert len({tuple(shuffled_order(6, f"item-{k}", seed=0)) for k in range(20)}) > 5
    assert any(shuffled_order(6, f"item-{k}", 0) != shuffled_order(6, f"item-{k}", 1) for k in range(5))
    assert shuffled_order(0, "x", 0) == [] and shuffled_order(1, "x", 0) == [0]


# ---- distillation --------------------------------------------------------------------------


def test_sample_indices() -> None:
    np.testing.assert_array_equal(sample_indices(5, 10, seed=0), np.arange(5))
    np.testing.assert_array_equal(sample_indices(10, 10, seed=0), np.arange(10))
    picked = sample_indices(100, 10, seed=3)
    assert len(set(picked)) == 10 and list(picked) == sorted(picked) and picked.max() < 100
    np.testing.assert_array_equal(picked, sample_indices(100, 10, seed=3))
    assert not np.array_equal(picked, sample_indices(100, 10, seed=4))


def _synthetic(n: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, 16))
    direction = rng.normal(size=16)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    signal = unit @ (direction / np.linalg.norm(direction))  # std about 1/4
    return embeddings, 3 + 4 * signal + rng.normal(scale=noise, size=n)


def test_fit_scorer_recovers_a_linear_jury() -> None:
    embeddings, scores = _synthetic(240, noise=0.2)
    scores[::12] = nan  # judges failed on some: dropped
    scorer, report = fit_scorer(embeddings, scores, holdout=0.25, seed=0, scale_max=5, min_score=3.0)
    assert (report["n_train"], report["n_holdout"]) == (165, 55)  # 220 scored, 25% held out
    assert report["warning"].startswith("hold-out of 55 records: its Spearman is uncertain by about +-0.27")
    assert report["spearman"] > 0.8
    assert report["mae"] < 0.5
    assert report["accuracy_at_min_score"] > 0.8
    assert report["ridge_alpha"] > 0
    predicted = scorer.predict(embeddings)
    assert predicted.shape == (240,) and predicted.min() >= 1 and predicted.max() <= 5
    assert "accuracy_at_min_score" not in fit_scorer(embeddings, scores, holdout=0.25, seed=0, scale_max=5, min_score=None)[1]


def test_fit_scorer_clips_and_reports_constant_juries() -> None:
    embeddings, scores = _synthetic(60, noise=0.0)
    scorer, _ = fit_scorer(embeddings, 3 + 5 * (scores - 3), holdout=0.25, seed=1, scale_max=5, min_score=None)
    predicted = scorer.predict(embeddings)
    assert predicted.min() == 1.0 and predicted.max() == 5.0
    _, report = fit_scorer(embeddings[:12], np.full(12, 4.0), holdout=0.5, seed=0, scale_max=5, min_score=None)
    assert (report["spearman"], report["mae"], report["n_holdout"]) == (None, pytest.approx(0.0), 6)
    # Six held-out rows say little: the report says how uncertain and how large it should be.
    assert report["warning"] == (
        "hold-out of 6 records: its Spearman is uncertain by about +-1.00; 100+ held-out records"
        " (distill.sample >= 200 at this holdout share) give +-0.2"
    )


def test_fit_scorer_needs_ten_scored_rows() -> None:
    embeddings, scores = _synthetic(30, noise=0.1)
    scores[9:] = nan
    with pytest.raises(ValueError, match="at least 10 jury-scored records .* got 9"):
        fit_scorer(embeddings, scores, holdout=0.25, seed=0, scale_max=5, min_score=None)
    # The holdout keeps 2 rows on each side even at the extremes.
    _, report = fit_scorer(embeddings[:10], np.arange(10.0) % 5 + 1, holdout=0.95, seed=0, scale_max=5, min_score=None)
    assert (report["n_train"], report["n_holdout"]) == (2, 8)
    assert not math.isnan(report["mae"])


def test_position_stats_count_order_consistency_and_first_shown_wins() -> None:
    comparisons = [
        Comparison("a", 0.3, 0.2, ("1", "2")),  # A wins in both orders
        Comparison("tie", 0.3, -0.2, ("1", "1")),  # the first shown always wins: position bias
        Comparison("tie", 0.4, None, ("1", None)),  # the swap was unreadable
        Comparison("b", -0.1, -0.3, ("2", "1")),  # B wins in both orders
    ]
    stats = position_stats(comparisons)
    assert stats["comparisons"] == 4
    assert stats["order_consistent"] == 0.5
    # first-shown preferences: 0.3, 0.3, 0.4, -0.1 (a_first) and -0.2, 0.2, 0.3 (-a_second): 5 of 7 > 0
    assert stats["first_shown_wins"] == pytest.approx(5 / 7)
    assert position_stats([]) == {"comparisons": 0, "order_consistent": None, "first_shown_wins": None}
