"""Combining several judges' scores, and the agreement and bias figures of the jury report.

Scores are a float matrix [n_items, n_judges] on the scale 1..scale_max, with NaN where a judge
failed (no parsable answer, request failed for good, budget exhausted). Every function here
ignores NaN entries; an item no judge scored aggregates to NaN ("unscored").

Rounding to the integer scale is half-up (2.5 -> 3) everywhere (majority, alpha, histogram), so
the three always agree on which bin a score falls in. numpy's own rounding is half-to-even.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import krippendorff
import numpy as np

Method = Literal["mean", "median", "majority", "min"]


def _matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [n_items, n_judges], got shape {scores.shape}")
    return scores


def _round_half_up(values: np.ndarray) -> np.ndarray:
    return np.floor(values + 0.5)  # NaN stays NaN


def aggregate(scores: np.ndarray, method: Method) -> np.ndarray:
    """One score per item from the judges' scores: [n_items, n_judges] -> [n_items].

    mean / median / min are over the judges that scored the item. majority is the most common
    half-up-rounded score among them; a tie between equally common scores goes to the LOWER
    score (conservative: a split jury must not lift an item over a min_score threshold).
    Items no judge scored are NaN.
    """
    scores = _matrix(scores)
    out = np.full(scores.shape[0], np.nan)
    scored = ~np.isnan(scores).all(axis=1)
    rows = scores[scored]  # only rows with a score, so the nan-reductions never see an empty row
    if method == "mean":
        out[scored] = np.nanmean(rows, axis=1)
    elif method == "median":
        out[scored] = np.nanmedian(rows, axis=1)
    elif method == "min":
        out[scored] = np.nanmin(rows, axis=1)
    elif method == "majority":
        rounded = _round_half_up(rows)
        # counts[i, j]: how many judges of row i gave judge j's rounded score (NaN != NaN -> 0).
        counts = (rounded[:, :, None] == rounded[:, None, :]).sum(axis=2)
        most = counts == counts.max(axis=1, keepdims=True)
        out[scored] = np.where(most, rounded, np.inf).min(axis=1)
    else:
        raise ValueError(f"unknown aggregate method {method!r}")
    return out


def spread(scores: np.ndarray) -> np.ndarray:
    """Per item, the highest minus the lowest judge score (0 for a single judge); NaN if none."""
    scores = _matrix(scores)
    out = np.full(scores.shape[0], np.nan)
    scored = ~np.isnan(scores).all(axis=1)
    rows = scores[scored]
    out[scored] = np.nanmax(rows, axis=1) - np.nanmin(rows, axis=1)
    return out


def krippendorff_alpha_ordinal(scores: np.ndarray, scale_max: int) -> float | None:
    """Krippendorff's alpha (ordinal) of the judges (coders) over the items (units).

    Scores are rounded half-up and clipped to the integer scale 1..scale_max. Missing scores
    are allowed; only units with at least two scores (pairable units) carry information.
    None when alpha is undefined or meaningless: fewer than 2 judges, fewer than 2 pairable
    units, or no variation at all among the pairable scores (expected disagreement is 0).
    """
    scores = _matrix(scores)
    if scores.shape[1] < 2:
        return None
    rounded = np.clip(_round_half_up(scores), 1, scale_max)
    pairable = (~np.isnan(rounded)).sum(axis=1) >= 2
    if pairable.sum() < 2:
        return None
    values = rounded[pairable]
    values = values[~np.isnan(values)]
    if values.min() == values.max():
        return None
    # The package wants [coders, units].
    return float(
        krippendorff.alpha(
            reliability_data=rounded.T,
            value_domain=np.arange(1, scale_max + 1, dtype=float),
            level_of_measurement="ordinal",
        )
    )


def length_preference_rate(
    chosen_lengths: Sequence[int] | np.ndarray, rejected_lengths: Sequence[int] | np.ndarray
) -> float | None:
    """Share of pairs whose chosen answer is the longer one (equal lengths count 0.5).

    0.5 means no length preference; well above it hints at a verbosity-biased jury. None when
    there are no pairs.
    """
    chosen = np.asarray(chosen_lengths, dtype=float)
    rejected = np.asarray(rejected_lengths, dtype=float)
    if chosen.shape != rejected.shape:
        raise ValueError(f"{chosen.size} chosen lengths but {rejected.size} rejected lengths")
    if chosen.size == 0:
        return None
    return float(np.mean(np.where(chosen == rejected, 0.5, chosen > rejected)))


def score_histogram(scores: np.ndarray, scale_max: int) -> dict[str, int]:
    """Counts of aggregated scores rounded half-up to 1..scale_max, plus NaN as "unscored".

    Every bin is present (zeros included) so reports of different runs line up.
    """
    scores = np.asarray(scores, dtype=float).ravel()
    scored = ~np.isnan(scores)
    # Clipped so that an out-of-scale value cannot create a bin the report does not have.
    bins = np.clip(_round_half_up(scores[scored]), 1, scale_max).astype(int)
    counts = np.bincount(bins, minlength=scale_max + 1)
    histogram = {str(value): int(counts[value]) for value in range(1, scale_max + 1)}
    histogram["unscored"] = int((~scored).sum())
    return histogram
