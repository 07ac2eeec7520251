"""The jury stage: judges rate records, scores are aggregated, low scorers become rejects.

Every judge (a rubric prompt on a model) rates every record of the kinds `jury.kinds` names; with
`jury.distill`, only a sample is rated by the LLMs and a regressor on sentence embeddings scores
the rest. Each record's `meta.jury` keeps the aggregate, every judge's score, the spread and how
the score was made; `RUN_DIR/jury/ratings.parquet` keeps every judge's raw answer, so a failed
rating (score null) is never silent. Records scored below `jury.min_score` are rejected with
reason `low_jury_score`; unscored records are kept and counted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from curation.jury.aggregate import (
    aggregate,
    krippendorff_alpha_ordinal,
    score_histogram,
    spread,
)
from curation.jury.distill import fit_scorer, sample_indices
from curation.jury.judge import (
    JudgeItem,
    Rating,
    RubricJudge,
    load_rubric,
    render_conversation,
)
from curation.llm.cache import AnswerCache
from curation.llm.endpoint import Budget, estimate_cost
from curation.llm.models import open_model
from curation.llm.types import ChatRequest
from curation.stage import Stage, StageResult, split_rejects
from schemas.bundled import cache_dir
from schemas.jury import JuryConfig
from schemas.record import RECORD_SCHEMA, meta_json

STAGE = "jury"
REASON = "low_jury_score"
log = logging.getLogger(__name__)

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

    def rate(
        self, items: list[JudgeItem], progress: bool, on_progress: Callable[[int, int], None] | None = None
    ) -> Verdicts:
        on_progress = on_progress or JURY_PROGRESS.get()
        if on_progress is None:
            ratings = [j.rate(items, progress=f"jury {j.name}" if progress else None) for j in self.judges]
        else:  # in about 20 batches per judge, reporting after each
            total, size = len(items) * len(self.judges), max(8, math.ceil(len(items) / 20))
            ratings = []
            for k, j in enumerate(self.judges):
                rs: list[Rating] = []
                for start in range(0, len(items), size):
                    rs += j.rate(items[start : start + size], progress=f"jury {j.name}" if progress else None)
                    on_progress(k * len(items) + len(rs), total)
                ratings.append(rs)
        by_judge = np.array(
            [[np.nan if r.score is None else r.score for r in rs] for rs in ratings], dtype=np.float64
        ).T.reshape(len(items), len(self.judges))
        return Verdicts(aggregate(by_judge, self.cfg.aggregate), by_judge, ratings)

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


def judge_item(row: dict) -> JudgeItem:
    """What a judge reads: the conversation before the last answer, and that answer."""
    if row["kind"] == "raw":
        return JudgeItem(prompt="", answer=row["text"] or "")
    messages = row["messages"] or []
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    answer = messages[last]["content"] if last < len(messages) else ""
    return JudgeItem(prompt=render_conversation(messages[:last]), answer=answer)


@dataclass
class Scored:
    scores: np.ndarray  # per item, NaN = unscored
    method: list[str]  # per item: "jury", "distilled" or "unscored"
    verdicts: Verdicts  # of the items the LLM judges rated
    rated: np.ndarray  # which items those are (all of them without distillation)
    distill: dict | None = None


def build_jury_stage(cfg: JuryConfig, jury: Jury, out_dir: Path, progress: bool = True) -> Stage:
    def run(records: pl.DataFrame) -> StageResult:
        mask = records["kind"].is_in(cfg.kinds)
        rows = np.flatnonzero(mask.to_numpy())
        items = [judge_item(r) for r in records.filter(mask).iter_rows(named=True)]
        cost = jury.estimate_cost(items)
        if cost is not None:
            log.info("jury: estimated cost %.4f USD for %d records", cost, len(items))
        scored = score_items(cfg, jury, items, progress)
        position = {int(k): pos for pos, k in enumerate(scored.rated)}  # item -> row in verdicts
        full = np.full(records.height, np.nan)
        full[rows] = scored.scores
        metas = records["meta"].to_list()
        for k, i in enumerate(rows):
            metas[i] = _with_jury(metas[i], full[i], scored.method[k], scored.verdicts, position.get(k), jury.names)
        records = records.with_columns(pl.Series("meta", metas, pl.String))
        _write_ratings(out_dir / "jury", records["id"].gather(rows[scored.rated]), jury.names, scored.verdicts)
        low = full < cfg.min_score if cfg.min_score is not None else np.zeros(records.height, bool)
        detail = [_detail(full[i], cfg.min_score, metas[i]) if low[i] else None for i in range(records.height)]
        result = split_rejects(
            records,
            STAGE,
            pl.Series([REASON if x else None for x in low], dtype=pl.String),
            pl.Series(detail, dtype=pl.String),
        )
        by_judge = scored.verdicts.by_judge
        result.extra = {
            "judges": jury.names,
            "rated": len(items),
            "unscored": int(np.isnan(scored.scores).sum()),
            "agreement_alpha": krippendorff_alpha_ordinal(by_judge, cfg.scale_max),
            "mean_spread": _nanmean(spread(by_judge)),
            "histogram": score_histogram(scored.scores, cfg.scale_max),
            "usage": jury.usage(),
            "estimated_cost_usd": cost,
            "distill": scored.distill,
        }
        return result

    return Stage(STAGE, run, reads=tuple(RECORD_SCHEMA))


def score_items(cfg: JuryConfig, jury: Jury, items: list[JudgeItem], progress: bool) -> Scored:
    """Aggregated jury scores for all items: rated by the LLM judges, or distilled from a sample."""
    if cfg.distill is None or len(items) <= cfg.distill.sample:
        verdicts = jury.rate(items, progress)
        return Scored(verdicts.scores, ["jury"] * len(items), verdicts, np.arange(len(items)))
    d = cfg.distill
    rated = sample_indices(len(items), d.sample, d.seed)
    rest = np.setdiff1d(np.arange(len(items)), rated)
    verdicts = jury.rate([items[k] for k in rated], progress)
    scored = Scored(np.full(len(items), np.nan), ["distilled"] * len(items), verdicts, rated, {"sample": len(rated)})
    scored.scores[rated] = verdicts.scores
    for k in rated:
        scored.method[k] = "jury"
    embeddings = _embed(items, d.model, progress)
    try:
        scorer, fit = fit_scorer(
            embeddings[rated], verdicts.scores, holdout=d.holdout, seed=d.seed,
            scale_max=cfg.scale_max, min_score=cfg.min_score,
        )
    except ValueError as exc:  # too few jury scores to fit: the rest stays unscored, said loudly
        log.warning("jury distillation skipped: %s", exc)
        scored.distill["error"] = str(exc)  # type: ignore[index]
        for k in rest:
            scored.method[k] = "unscored"
        return scored
    scored.scores[rest] = scorer.predict(embeddings[rest])
    scored.distill.update(fit)  # type: ignore[union-attr]
    return scored


def _embed(items: list[JudgeItem], model: str | None, progress: bool) -> np.ndarray:
    from curation.dedup.semantic import load_model

    # The answer first: the model reads only the first 128 tokens (the semantic dedup default,
    # so both stages share one loaded model), and the answer is what the jury scored.
    texts = [f"{item.answer}\n\n{item.prompt}".strip() for item in items]
    return load_model(model, 128).encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=progress)


def _with_jury(meta: str | None, score: float, method: str, verdicts: Verdicts, at: int | None, names: list[str]) -> str:
    data = orjson.loads(meta) if meta else {}
    jury: dict = {"score": None if np.isnan(score) else round(float(score), 4), "method": method}
    if at is not None:
        by_judge = verdicts.by_judge[at]
        jury["judges"] = {n: None if np.isnan(s) else round(float(s), 4) for n, s in zip(names, by_judge, strict=True)}
        jury["spread"] = None if np.isnan(by_judge).all() else round(float(np.nanmax(by_judge) - np.nanmin(by_judge)), 4)
        failed = {
            n: {"error": r[at].error, "raw": r[at].raw}
            for n, r in zip(names, verdicts.ratings, strict=True)
            if r[at].score is None
        }
        if failed:
            jury["failed"] = failed
    data["jury"] = jury
    return meta_json(data)


def _detail(score: float, min_score: float | None, meta: str) -> str:
    judges = orjson.loads(meta)["jury"].get("judges", {})
    shown = ", ".join(f"{n} {s:.2f}" if s is not None else f"{n} failed" for n, s in judges.items())
    return f"score {score:.2f} < {min_score}" + (f" ({shown})" if shown else "")


def _write_ratings(folder: Path, ids: pl.Series, names: list[str], verdicts: Verdicts) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": rid, "judge": name, **{k: getattr(r, k) for k in ("score", "method", "error", "raw", "attempts")}}
        for name, ratings in zip(names, verdicts.ratings, strict=True)
        for rid, r in zip(ids.to_list(), ratings, strict=True)
    ]
    schema = {"id": pl.String, "judge": pl.String, "score": pl.Float64, "method": pl.String,
              "error": pl.String, "raw": pl.String, "attempts": pl.Int64}
    pl.DataFrame(rows, schema=schema).write_parquet(folder / "ratings.parquet")


def _nanmean(values: np.ndarray) -> float | None:
    return None if values.size == 0 or np.isnan(values).all() else round(float(np.nanmean(values)), 4)


def default_cache(cfg_dir: str | None) -> AnswerCache:
    """The answer cache: jury.cache_dir, else one shared by all runs (`<cache>/llm`)."""
    return AnswerCache(Path(cfg_dir) if cfg_dir else cache_dir() / "llm")
