"""The jury panel: the configured judges over one answer cache and one budget, rating items
together (scores per judge, aggregated); shared by the jury stage and preference pairs."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass

import numpy as np

from curation.jury.aggregate import aggregate
from curation.jury.judge import JudgeItem, Rating, RubricJudge, load_rubric
from curation.llm.cache import AnswerCache
from curation.llm.chat import open_model
from curation.llm.endpoint import Budget, estimate_cost
from curation.llm.types import ChatRequest, Usage
from schemas.base import StageFailed
from schemas.jury import JuryConfig

# (done, total) ratings, for a caller's progress display (the flows set it: a Prefect artifact).
JURY_PROGRESS: ContextVar[Callable[[int, int], None] | None] = ContextVar("jury_progress", default=None)


@dataclass
class Verdicts:
    """The jury's view of a list of items: one row per item, one column per judge."""

    scores: np.ndarray  # aggregated, NaN = unscored
    by_judge: np.ndarray  # [items, judges], NaN = that judge failed
    ratings: list[list[Rating]]  # [judge][item]


class Jury:
    """The configured judges over one answer cache and one budget; shared by jury and preference."""

    def __init__(self, cfg: JuryConfig, cache: AnswerCache | None, budget: Budget | None) -> None:
        self.cfg = cfg
        self.judges = [
            RubricJudge(
                j.name,
                open_model(j.model, cache, budget),
                load_rubric(j.rubric),
                scale_max=cfg.scale_max,
                temperature=j.temperature,
                max_tokens=j.max_tokens,
                reasks=j.reasks,
                max_chars=cfg.max_chars,
            )
            for j in cfg.judges
        ]

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.judges]

    @property
    def identities(self) -> list[str]:
        """Each judge's model (endpoint URL and model name, or local path): named in failures."""
        return [j.model.identity for j in self.judges]

    def rate(
        self, items: list[JudgeItem], progress: bool, on_progress: Callable[[int, int], None] | None = None
    ) -> Verdicts:
        on_progress = on_progress or JURY_PROGRESS.get()
        ratings = []
        # Without a progress callback, one call per judge; with one, about 20 batches per judge.
        size = len(items) if on_progress is None else max(8, math.ceil(len(items) / 20))
        for k, j in enumerate(self.judges):
            rs: list[Rating] = []
            for start in range(0, len(items), max(size, 1)):
                try:
                    rs += j.rate(items[start : start + size], progress=f"jury {j.name}" if progress else None)
                except StageFailed as exc:  # its endpoint is down or refuses: name the judge
                    raise StageFailed(f"judge {j.name}: {exc}") from None
                if on_progress is not None:
                    on_progress(k * len(items) + len(rs), len(items) * len(self.judges))
            ratings.append(rs)
        by_judge = np.array(
            [[np.nan if r.score is None else r.score for r in rs] for rs in ratings], dtype=np.float64
        ).T.reshape(len(items), len(self.judges))
        return Verdicts(aggregate(by_judge, self.cfg.aggregate), by_judge, ratings)

    @property
    def all_local(self) -> bool:
        """Whether every judge is a local model (compute-bound: worth spreading over workers)."""
        return all(j.model.local is not None for j in self.cfg.judges)

    def add_usage(self, usage: dict[str, Usage]) -> None:
        """Count what judges in other processes (Ray workers) consumed."""
        for judge in self.judges:
            judge.model.usage.merge(usage[judge.name])

    @property
    def priced(self) -> bool:
        """Whether any judge is an endpoint with a price table."""
        return any(j.model.endpoint is not None and j.model.endpoint.price is not None for j in self.cfg.judges)

    def estimate_cost(self, items: list[JudgeItem]) -> float | None:
        """USD for rating `items` with every priced endpoint judge (None: no prices)."""
        total = None
        for spec, judge in zip(self.cfg.judges, self.judges, strict=True):
            if spec.model.endpoint is None or spec.model.endpoint.price is None:
                continue
            requests = [
                ChatRequest(messages=(("user", item.prompt + item.answer),), max_tokens=judge.max_tokens)
                for item in items
            ]
            total = (total or 0.0) + (estimate_cost(spec.model.endpoint, requests) or 0.0)
        return total

    def usage(self) -> dict[str, dict]:
        return {j.name: {"model": j.model.identity, **asdict(j.model.usage)} for j in self.judges}
