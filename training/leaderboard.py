"""Candidate runs ranked by `train.select_by`: the first metric decides, the next break ties."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.train import HIGHER_IS_BETTER

DECIMALS = 4  # values equal to this many decimals are a tie, broken by the next metric


def rank(metrics: Mapping[str, Mapping[str, float | None]], select_by: Sequence[str]) -> list[str]:
    """Candidate names, best first. A candidate without a value for a metric ranks below every
    one with a value; candidates equal on every metric keep their configured order."""

    def key(name: str) -> tuple:
        parts = []
        for metric in select_by:
            value = metrics[name].get(metric)
            if value is None:
                parts.append((1, 0.0))
            else:
                rounded = round(value, DECIMALS)
                parts.append((0, -rounded if HIGHER_IS_BETTER[metric] else rounded))
        return tuple(parts)

    return sorted(metrics, key=key)  # sorted() is stable: config order among equals
