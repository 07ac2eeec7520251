"""Choosing records within a budget, best score first, with a guard against near-repeats.

Every method walks the records in `order` (best score first, ties by id) and takes a record only
when it fits what is left of the budget:

- **radius** (score-first greedy): a record within cosine `radius` of a record already selected
  is skipped; the radius holds between every two selected records. When too few records lie
  outside each other's radius, fewer than the budget are selected (said in the figures).
- **mmr** (maximal marginal relevance, Carbonell & Goldstein 1998): repeatedly the record with the
  best lambda * score - (1 - lambda) * (cosine to its closest selected record, floored at 0);
  O(records) a pick, so slower than radius on large budgets (BENCHMARKS.md).
- **none**: the score alone.

Why each unselected record was left out (`Pick.cause`): `radius` (too close to a selected
record), `tokens` (it would have overrun the token budget) or `budget` (the budget was spent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_ROWS = 1024  # candidates compared with the selected records at a time
NEAREST_SIMILARITIES = 1 << 24  # float32 similarities computed at once when finding neighbours


class Budget:
    """What is left of a budget in records or tokens; a record fits when it leaves it >= 0."""

    def __init__(self, records: int | None, tokens: int | None, lengths: np.ndarray | None) -> None:
        if (records is None) == (tokens is None) or (tokens is not None and lengths is None):
            raise ValueError("a budget is records, or tokens with the records' lengths")
        self.records, self.tokens, self.lengths = records, tokens, lengths
        self.count, self.used = 0, 0

    def fits(self, i: int) -> bool:
        if self.records is not None:
            return self.count < self.records
        return self.lengths is not None and self.used + int(self.lengths[i]) <= self.tokens  # type: ignore[operator]

    def take(self, i: int) -> None:
        self.count += 1
        self.used += int(self.lengths[i]) if self.lengths is not None else 0

    def spent(self, smallest: int) -> bool:
        """Nothing more can fit (`smallest`: the fewest tokens of any record)."""
        if self.records is not None:
            return self.count >= self.records
        return self.used + smallest > self.tokens  # type: ignore[operator]


@dataclass
class Pick:
    selected: np.ndarray  # rows, in the order they were selected
    cause: np.ndarray  # per row: "" for selected rows, else radius | tokens | budget


def pick(
    embeddings: np.ndarray,
    score: np.ndarray,
    order: np.ndarray,
    budget: Budget,
    method: str,
    radius: float,
    mmr_lambda: float,
) -> Pick:
    """The rows selected from `embeddings` (L2-normalised) walking `order`, within `budget`."""
    cause = np.full(len(order), "budget", dtype=object)
    smallest = int(budget.lengths.min()) if budget.lengths is not None and len(budget.lengths) else 0
    if method == "mmr":
        selected = _mmr(embeddings, score, order, budget, mmr_lambda, cause, smallest)
    else:
        selected = _greedy(embeddings, order, budget, radius if method == "radius" else None, cause, smallest)
    cause[selected] = ""
    return Pick(np.asarray(selected, np.int64), cause)


def _greedy(
    embeddings: np.ndarray, order: np.ndarray, budget: Budget, radius: float | None, cause: np.ndarray, smallest: int
) -> list[int]:
    selected: list[int] = []
    chosen = np.empty((min(len(order), budget.records or len(order)), embeddings.shape[1]), np.float32)
    for lo in range(0, len(order), BLOCK_ROWS):
        if budget.spent(smallest):
            break
        rows = order[lo : lo + BLOCK_ROWS]
        block = embeddings[rows]
        before = len(selected)
        # Closest record selected before this block, then the ones selected inside it, in order.
        prior = (block @ chosen[:before].T).max(axis=1) if before and radius is not None else np.full(len(rows), -np.inf)
        inner = block @ block.T if radius is not None else None
        here: list[int] = []
        for j, i in enumerate(rows.tolist()):
            if not budget.fits(i):
                cause[i] = "tokens" if budget.tokens is not None else "budget"
                if budget.spent(smallest):
                    break
                continue
            if radius is not None and (prior[j] >= radius or (here and inner[j, here].max() >= radius)):  # type: ignore[index]
                cause[i] = "radius"
                continue
            budget.take(i)
            selected.append(i)
            here.append(j)
        chosen[before : len(selected)] = block[here]
    return selected


def _mmr(
    embeddings: np.ndarray,
    score: np.ndarray,
    order: np.ndarray,
    budget: Budget,
    mmr_lambda: float,
    cause: np.ndarray,
    smallest: int,
) -> list[int]:
    """Each pick: the open record of best value, then every record's closest cosine updated (one
    matrix-vector product). Lazy variants (stale values as upper bounds) were tried: on 52k
    answers the bounds of densely packed scores rarely settled a pick, and they were slower."""
    selected: list[int] = []
    vectors = embeddings[order]  # in order: argmax's first maximum is the better rank
    gain = (mmr_lambda * score[order]).astype(np.float32)
    closest = np.zeros(len(order), np.float32)  # cosine to the closest selected record, floored at 0
    value = gain.copy()  # -inf once a record is taken or dropped
    while not budget.spent(smallest):
        j = int(value.argmax())
        if value[j] == -np.inf:
            break
        value[j] = -np.inf
        i = int(order[j])
        if not budget.fits(i):
            cause[i] = "tokens"
            continue
        budget.take(i)
        selected.append(i)
        np.maximum(closest, vectors @ vectors[j], out=closest)
        open_ = value != -np.inf
        value[open_] = gain[open_] - (1 - mmr_lambda) * closest[open_]
    return selected


def nearest(embeddings: np.ndarray, rows: np.ndarray, among: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of `rows`, the row of `among` most similar to it and that cosine (-1 and NaN when
    `among` is empty); ties go to the earlier row of `among`."""
    best = np.full(len(rows), -1, np.int64)
    cosine = np.full(len(rows), np.nan, np.float32)
    if not len(among) or not len(rows):
        return best, cosine
    targets = embeddings[among]
    step = max(1, NEAREST_SIMILARITIES // len(among))
    for lo in range(0, len(rows), step):
        sims = embeddings[rows[lo : lo + step]] @ targets.T
        at = sims.argmax(axis=1)
        best[lo : lo + step] = among[at]
        cosine[lo : lo + step] = sims[np.arange(len(at)), at]
    return best, cosine
