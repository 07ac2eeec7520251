"""The pair-decision measurement (bench/fit_pair_decision.py, bench/bench_meaning.py): the
negation feature and the precision / recall curve, on pairs written here."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_meaning import curve
from bench.fit_pair_decision import negation_flip


@pytest.mark.parametrize(
    ("a", "b", "flipped"),
    [
        ("There is no man smiling", "A man is smiling", True),
        ("Two people box and spectators are not watching", "Two people box and spectators are watching", True),
        ("Write a function that doesn't use recursion.", "Write a function that uses recursion.", False),  # no stemming
        ("Write a function that doesn't use recursion.", "Write a function that can use recursion.", True),
        ("He did not win the race.", "He lost the race.", False),  # reworded, nothing un-negated
        ("The MTA will not discuss the matter.", "The MTA will not talk about the matter.", False),  # both negated
        ("A man is smiling", "A man smiles", False),  # no negation at all
    ],
)
def test_negation_flip(a: str, b: str, flipped: bool) -> None:
    assert negation_flip(a, b) is flipped
    assert negation_flip(b, a) is flipped


def test_curve_reads_best_f1_and_recall_at_precision() -> None:
    truth = np.array([True, True, False, True, False, False])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, -np.inf])
    out = curve(score, truth, (0.9,))
    # Merging the top 4 (3 of 3 paraphrases, precision 0.75) is the best F1: 2 * 0.75 / 1.75.
    assert out["best_f1"] == round(2 * 0.75 / 1.75, 3) and out["at_precision"] == 0.75
    assert out["recall@0.9"] == round(2 / 3, 3)  # the top two only
    # A pair scored -inf (vetoed) is never merged: no threshold reaches it.
    assert curve(np.array([0.9, -np.inf]), np.array([False, True]))["best_f1"] == 0.0

