"""Jury distillation: the LLM jury scores a sample, a ridge regressor on text embeddings scores
the rest.

`fit_scorer` first measures how well the regressor agrees with the jury on a held-out share of
the sample (Spearman correlation, mean absolute error and, with a min_score, how often both
sides put a record on the same side of the threshold), then refits on the whole scored sample,
so the scorer the caller uses has seen every jury score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.linear_model import RidgeCV

MIN_SCORED = 10
# A hold-out this large puts the Spearman estimate within about +-0.2 (95%, Fisher z); smaller
# ones are reported with a warning, not trusted silently (5 rows: +-0.9).
TRUSTED_HOLDOUT = 100
ALPHAS = np.logspace(-3, 3, 13)


def sample_indices(n: int, sample: int, seed: int) -> np.ndarray:
    """Sorted indices of `sample` of the n records, drawn without replacement; all when n <= sample."""
    if n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


@dataclass(frozen=True)
class Scorer:
    """A fitted ridge model on L2-normalised embeddings; predictions clipped to the scale."""

    model: RidgeCV  # scikit-learn and scipy load on first use: ~3 s of every CLI start otherwise
    scale_max: int

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        from sklearn.preprocessing import normalize

        return np.clip(self.model.predict(normalize(embeddings)), 1, self.scale_max)


def _fit(embeddings: np.ndarray, scores: np.ndarray, scale_max: int) -> Scorer:
    # Normalised so the ridge penalty means the same whatever the embedding model's norms.
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import normalize

    return Scorer(RidgeCV(alphas=ALPHAS).fit(normalize(embeddings), scores), scale_max)


def fit_scorer(
    embeddings: np.ndarray,
    scores: np.ndarray,
    *,
    holdout: float,
    seed: int,
    scale_max: int,
    min_score: float | None,
) -> tuple[Scorer, dict]:
    """Fit a scorer on the jury's scores (NaN = unscored, dropped) and report its agreement.

    Report: n_train, n_holdout, spearman (None when the jury or the predictions are constant on
    the holdout), mae, ridge_alpha (of the final fit) and, when min_score is set,
    accuracy_at_min_score = share of holdout rows where (prediction >= min_score) equals
    (jury >= min_score). Raises ValueError with fewer than 10 scored rows.
    """
    embeddings = np.asarray(embeddings, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if embeddings.ndim != 2 or len(embeddings) != len(scores):
        raise ValueError(f"need one embedding row per score: embeddings {embeddings.shape}, scores {scores.shape}")
    scored = ~np.isnan(scores)
    embeddings, scores = embeddings[scored], scores[scored]
    n = len(scores)
    if n < MIN_SCORED:
        raise ValueError(f"jury distillation needs at least {MIN_SCORED} jury-scored records to fit a scorer, got {n}")

    # At least 2 rows on each side, so the holdout has a correlation and training a fit.
    n_holdout = min(max(round(n * holdout), 2), n - 2)
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_holdout], order[n_holdout:]
    predicted = _fit(embeddings[train], scores[train], scale_max).predict(embeddings[test])
    truth = scores[test]
    constant = np.ptp(truth) == 0 or np.ptp(predicted) == 0
    report: dict = {
        "n_train": len(train),
        "n_holdout": n_holdout,
        "spearman": None if constant else float(_spearman(truth, predicted)),
        "mae": float(np.mean(np.abs(predicted - truth))),
    }
    if min_score is not None:
        report["accuracy_at_min_score"] = float(np.mean((predicted >= min_score) == (truth >= min_score)))
    if n_holdout < TRUSTED_HOLDOUT:
        report["warning"] = holdout_warning(n_holdout, holdout)

    scorer = _fit(embeddings, scores, scale_max)
    report["ridge_alpha"] = float(scorer.model.alpha_)
    return scorer, report


def holdout_warning(n_holdout: int, holdout: float) -> str:
    """Why a small hold-out's agreement figures cannot be trusted, and how large it should be."""
    spread = 1.96 / math.sqrt(max(n_holdout - 3, 1))
    sample = math.ceil(TRUSTED_HOLDOUT / holdout) if holdout > 0 else TRUSTED_HOLDOUT
    return (
        f"hold-out of {n_holdout} records: its Spearman is uncertain by about +-{min(spread, 1.0):.2f};"
        f" {TRUSTED_HOLDOUT}+ held-out records (distill.sample >= {sample} at this holdout share) give +-0.2"
    )


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return spearmanr(a, b).statistic
