"""The jury stage: judges rate records, scores are aggregated, low scorers become rejects.

Every judge (a rubric prompt on a model) rates every record of the kinds `jury.kinds` names; with
`jury.distill`, only a sample is rated by the LLMs and a regressor on sentence embeddings scores
the rest. Each record's `meta.jury` keeps the aggregate, every judge's score, the spread and how
the score was made; `RUN_DIR/jury/ratings.parquet` keeps every judge's raw answer, so a failed
rating (score null) is never silent. Records scored below `jury.min_score` are rejected with
reason `low_jury_score`. Fail closed: when more than `jury.max_unscored` of the rated records end
unscored (every judge failed, or distillation could not fit), the stage stops the run naming the
judges and their error kinds; the unscored records below that share are kept or rejected as
`unscored` (`jury.unscored`), and counted either way.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from curation.core.corpus import (
    Corpus,
    CorpusWriter,
    Source,
    column,
    shards,
    take,
    write_parquet,
)
from curation.core.engine import Engine
from curation.core.stage import Decision, Stage, StageResult, split_each
from curation.jury.aggregate import (
    krippendorff_alpha_ordinal,
    score_histogram,
    spread,
)
from curation.jury.distill import Scorer, fit_scorer, sample_indices
from curation.jury.judge import JudgeItem, render_conversation
from curation.jury.panel import JURY_PROGRESS, Jury, Verdicts
from curation.llm.cache import default_cache
from curation.llm.failures import check_failures
from curation.llm.types import Usage
from schemas.bundled import MINILM_NAME
from schemas.figures import DistillFigures, JudgeUsage, JuryFigures
from schemas.jury import JudgeFailure, JuryConfig, JuryVerdict, Method

STAGE = "jury"
RAY_BATCH = 64  # items a Ray task rates with local judges (~1 s an item on a CPU core)
REASON = "low_jury_score"
UNSCORED = "unscored"
log = logging.getLogger(__name__)

def judge_item(row: dict) -> JudgeItem:
    """What a judge reads: the conversation before the last answer, and that answer."""
    if row["kind"] == "raw":
        return JudgeItem(prompt="", answer=row["text"] or "")
    messages = row["messages"] or []
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    answer = messages[last]["content"] if last < len(messages) else ""
    return JudgeItem(prompt=render_conversation(messages[:last]), answer=answer)


@dataclass
class _Rated:
    """What the LLM judges said about the rated records (all eligible ones, or the distillation
    sample), by row: compact, no texts. Raw answers go to ratings.parquet as they arrive."""

    rows: np.ndarray  # sorted rows of the rated records
    scores: np.ndarray  # aggregated, NaN = unscored
    by_judge: np.ndarray  # [rated, judges]
    failed: dict[int, dict[str, JudgeFailure]]  # row -> judge -> why, for the judges that failed on it
    embeddings: np.ndarray | None  # of the rated items, when distilling


def build_jury_stage(
    cfg: JuryConfig, jury: Jury, out_dir: Path, progress: bool = True, engine: Engine | None = None
) -> Stage:
    """Streams a corpus: the LLM judges rate the records of `jury.kinds` shard by shard (with
    distillation, only the sample, and the fitted scorer then scores the rest shard by shard).
    With the Ray engine, local-model judges rate as Ray tasks (see _verdicts)."""

    def run(records: Source) -> StageResult:
        eligible = np.flatnonzero(column(records, pl.col("kind").is_in(cfg.kinds)).to_numpy())
        d = cfg.distill
        distilled = d is not None and len(eligible) > d.sample
        rated_rows = eligible[sample_indices(len(eligible), d.sample, d.seed)] if d and distilled else eligible
        cost = _estimate_cost(jury, records, rated_rows)
        if cost is not None:
            log.info("jury: estimated cost %.4f USD for %d records", cost, len(rated_rows))
        embed_with = d.model if d and distilled else False
        rated = _rate(jury, records, rated_rows, out_dir / "jury", progress, embed_with, engine)
        scorer, distill = None, None
        if d and distilled:
            scorer, distill = _fit(cfg, rated)
        elif d:
            distill = {"sample": len(rated_rows)}
        _check_unscored(cfg, jury, rated, len(eligible), distill if d and distilled and scorer is None else None)
        method: Method = "distilled" if scorer is not None else "unscored"  # of the records not rated
        seen: list[np.ndarray] = []  # every eligible record's score, for the histogram

        def decide(shard: pl.DataFrame, lo: int) -> Decision:
            local = np.flatnonzero(shard["kind"].is_in(cfg.kinds).to_numpy())
            rows = lo + local
            at = np.minimum(np.searchsorted(rated.rows, rows), max(len(rated.rows) - 1, 0))
            is_rated = rated.rows[at] == rows if len(rated.rows) else np.zeros(len(rows), bool)
            score = np.where(is_rated, rated.scores[at] if len(rated.rows) else np.nan, np.nan)
            if scorer is not None and not is_rated.all():
                items = [judge_item(r) for r in shard[local[~is_rated]].iter_rows(named=True)]
                score[~is_rated] = scorer.predict(_embed(items, d.model if d else None, False))
            seen.append(score)
            metas = shard["meta"].to_list()
            for k, i in enumerate(local):
                row = int(rows[k])
                judged = rated.by_judge[at[k]] if is_rated[k] else None
                metas[i] = _with_jury(
                    metas[i], score[k], "jury" if is_rated[k] else method, judged, rated.failed.get(row), jury.names
                )
            full = np.full(shard.height, np.nan)
            full[local] = score
            low = full < cfg.min_score if cfg.min_score is not None else np.zeros(shard.height, bool)
            unscored = np.zeros(shard.height, bool)
            if cfg.unscored == "reject":
                unscored[local] = np.isnan(score)
            reasons = [REASON if low[i] else UNSCORED if unscored[i] else None for i in range(shard.height)]
            details = [
                _detail(full[i], cfg.min_score, metas[i]) if low[i] else _unscored_detail(metas[i]) if unscored[i] else None
                for i in range(shard.height)
            ]
            reason = pl.Series(reasons, dtype=pl.String)
            detail = pl.Series(details, dtype=pl.String)
            return shard.with_columns(pl.Series("meta", metas, pl.String)), reason, detail, None

        result = split_each(records, STAGE, decide)
        scores = np.concatenate(seen) if seen else np.zeros(0)
        result.figures = JuryFigures(
            judges=jury.names,
            rated=len(eligible),
            unscored=int(np.isnan(scores).sum()),
            agreement_alpha=krippendorff_alpha_ordinal(rated.by_judge, cfg.scale_max),
            mean_spread=_nanmean(spread(rated.by_judge)),
            histogram=score_histogram(scores, cfg.scale_max),
            usage={name: JudgeUsage.model_validate(u) for name, u in jury.usage().items()},
            estimated_cost_usd=cost,
            distill=None if distill is None else DistillFigures.model_validate(distill),
        )
        return result

    return Stage(STAGE, run, streams=True)


def _check_unscored(cfg: JuryConfig, jury: Jury, rated: _Rated, eligible: int, failed_distill: dict | None) -> None:
    """Stop the run when more than jury.max_unscored of the eligible records would end unscored."""
    unscored = int(np.isnan(rated.scores).sum())
    who = {name: f"judge {name} ({model})" for name, model in zip(jury.names, jury.identities, strict=True)}
    causes: dict[str, Counter[str]] = {label: Counter() for label in who.values()}
    for failures in rated.failed.values():
        for name, failure in failures.items():
            causes[who[name]][str(failure.error)] += 1
    if failed_distill is not None:  # nothing scores the records outside the sample
        unscored += eligible - len(rated.rows)
        causes["distillation"] = Counter({failed_distill.get("error", "no scorer"): 1})
    check_failures("jury", unscored, eligible, cfg.max_unscored, "jury.max_unscored", causes)


def _rated_items(records: Source, rows: np.ndarray, batch: int | None = None) -> Iterator[Batch]:
    """(rows, their judge items) shard by shard (in batches of at most `batch`), for the given
    sorted rows."""
    for shard, lo in shards(records):
        inside = rows[(rows >= lo) & (rows < lo + shard.height)]
        for start in range(0, len(inside), batch or max(len(inside), 1)):
            part = inside[start : start + (batch or len(inside))]
            yield part, [judge_item(r) for r in shard[part - lo].iter_rows(named=True)]


def _estimate_cost(jury: Jury, records: Source, rows: np.ndarray) -> float | None:
    """The price of rating `rows` (None when no judge has a price): a pass over the corpus."""
    if not jury.priced:
        return None
    return sum(jury.estimate_cost(items) or 0.0 for _, items in _rated_items(records, rows))


Batch = tuple[np.ndarray, list[JudgeItem]]  # rows and their judge items


def _verdicts(
    jury: Jury, records: Source, rows: np.ndarray, engine: Engine | None, progress: bool
) -> Iterator[tuple[np.ndarray, list[JudgeItem], Verdicts]]:
    """The verdicts on `rows` in batches, in order. Local-model judges on the Ray engine rate a
    batch of RAY_BATCH items per Ray task (each worker process loads the models once); endpoint
    judges rate a shard at a time here, where their I/O-bound requests are concurrent already
    and one process keeps the rate limits and the budget global."""
    report = JURY_PROGRESS.get()
    total, judges, done = len(rows), len(jury.judges), 0
    if engine is not None and not engine.in_process and jury.all_local:
        rate = partial(rate_batch, cfg=jury.cfg)
        batches = _rated_items(records, rows, RAY_BATCH)
        for batch_rows, items, verdicts, usage in engine.imap(rate, batches, _batch_count(records, rows), "jury"):
            jury.add_usage(usage)
            done += len(items)
            if report:
                report(done * judges, total * judges)
            yield batch_rows, items, verdicts
        return
    for batch_rows, items in _rated_items(records, rows):

        def on_progress(k: int, _total: int, offset: int = done * judges) -> None:
            report(offset + k, total * judges)  # type: ignore[misc]

        yield batch_rows, items, jury.rate(items, progress, on_progress if report else None)
        done += len(items)


def _batch_count(records: Source, rows: np.ndarray) -> int:
    """How many batches _rated_items(records, rows, RAY_BATCH) makes (for the progress bar)."""
    bounds = [*records.starts, records.height] if isinstance(records, Corpus) else [0, records.height]
    per_shard = np.diff(np.searchsorted(rows, bounds))
    return int(sum(-(-int(n) // RAY_BATCH) for n in per_shard))


def rate_batch(batch: Batch, cfg: JuryConfig) -> tuple[np.ndarray, list[JudgeItem], Verdicts, dict[str, Usage]]:
    """A batch rated by the configured (local-model) judges in this process, with their usage.
    Runs in Ray workers: the model weights stay loaded in the worker between batches."""
    rows, items = batch
    jury = Jury(cfg, default_cache(cfg.cache_dir), None)
    verdicts = jury.rate(items, progress=False)
    return rows, items, verdicts, {j.name: j.model.usage for j in jury.judges}


def _rate(
    jury: Jury,
    records: Source,
    rows: np.ndarray,
    folder: Path,
    progress: bool,
    embed_with: str | None | bool,
    engine: Engine | None = None,
) -> _Rated:
    """The judges' verdicts on `rows`, rated shard by shard; every raw answer to
    folder/ratings.parquet. embed_with: the distillation model (None = bundled) or False."""
    judges = len(jury.judges)
    scores, by_judge, embeddings, failed = [], [], [], {}
    ratings = CorpusWriter(folder / ".ratings", RATINGS_BATCH, folder, RATINGS_SCHEMA)
    for shard_rows, items, verdicts in _verdicts(jury, records, rows, engine, progress):
        scores.append(verdicts.scores)
        by_judge.append(verdicts.by_judge)
        ratings.write(_ratings_frame(shard_rows, records, jury.names, verdicts))
        for k, row in enumerate(shard_rows.tolist()):
            failures = {
                name: JudgeFailure(error=r[k].error, raw=r[k].raw)
                for name, r in zip(jury.names, verdicts.ratings, strict=True)
                if r[k].score is None
            }
            if failures:
                failed[row] = failures
        if embed_with is not False:
            embeddings.append(_embed(items, embed_with, False))  # type: ignore[arg-type]  # one bar a batch is noise
    write_parquet([ratings.close()], folder / "ratings.parquet", RATINGS_SCHEMA)
    shutil.rmtree(folder / ".ratings", ignore_errors=True)
    return _Rated(
        rows=rows,
        scores=np.concatenate(scores) if scores else np.zeros(0),
        by_judge=np.concatenate(by_judge) if by_judge else np.zeros((0, judges)),
        failed=failed,
        embeddings=np.concatenate(embeddings) if embeddings else None,
    )


def _fit(cfg: JuryConfig, rated: _Rated) -> tuple[Scorer | None, dict]:
    """The distillation scorer fitted on the rated sample, and its report; None when the sample
    has too few scores (the rest then stays unscored, said loudly)."""
    d = cfg.distill
    assert d is not None and rated.embeddings is not None
    report: dict = {"sample": len(rated.rows)}
    try:
        scorer, fit = fit_scorer(
            rated.embeddings, rated.scores, holdout=d.holdout, seed=d.seed,
            scale_max=cfg.scale_max, min_score=cfg.min_score,
        )
    except ValueError as exc:
        log.warning("jury distillation skipped: %s", exc)
        return None, {**report, "error": str(exc)}
    if "warning" in fit:
        log.warning("jury distillation: %s", fit["warning"])
    return scorer, {**report, **fit}


def _embed(items: list[JudgeItem], model: str | None, progress: bool) -> np.ndarray:
    from curation.dedup.encoders import load_encoder

    # The answer first: the model reads only the first 128 tokens (the semantic dedup default,
    # so both stages can share a loaded model), and the answer is what the jury scored. The
    # bundled transformer by default: the agreement figures in BENCHMARKS were measured with it.
    texts = [f"{item.answer}\n\n{item.prompt}".strip() for item in items]
    return load_encoder(model or MINILM_NAME, 128).encode(texts, 32, progress)


def _with_jury(
    meta: str | None, score: float, method: Method, by_judge: np.ndarray | None,
    failed: dict[str, JudgeFailure] | None, names: list[str]
) -> str:
    verdict = JuryVerdict(score=None if np.isnan(score) else round(float(score), 4), method=method)
    if by_judge is not None:
        verdict.judges = {n: None if np.isnan(s) else round(float(s), 4) for n, s in zip(names, by_judge, strict=True)}
        verdict.spread = None if np.isnan(by_judge).all() else round(float(np.nanmax(by_judge) - np.nanmin(by_judge)), 4)
        if failed:
            verdict.failed = failed
    return verdict.into(meta)


def _verdict(meta: str) -> JuryVerdict:
    verdict = JuryVerdict.read(meta)
    assert verdict is not None, "a record this stage rated carries its verdict"
    return verdict


def _unscored_detail(meta: str) -> str:
    failed = _verdict(meta).failed or {}
    return "no score" + (": " + ", ".join(f"{n} {f.error}" for n, f in failed.items()) if failed else "")


def _detail(score: float, min_score: float | None, meta: str) -> str:
    judges = _verdict(meta).judges or {}
    shown = ", ".join(f"{n} {s:.2f}" if s is not None else f"{n} failed" for n, s in judges.items())
    return f"score {score:.2f} < {min_score}" + (f" ({shown})" if shown else "")


RATINGS_SCHEMA = {"id": pl.String, "judge": pl.String, "score": pl.Float64, "method": pl.String,
                  "error": pl.String, "raw": pl.String, "attempts": pl.Int64}
RATINGS_BATCH = 50_000  # ratings per shard of the ratings written while a run goes


def _ratings_frame(rows: np.ndarray, records: Source, names: list[str], verdicts: Verdicts) -> pl.DataFrame:
    ids = take(records, rows, "id").to_list()
    return pl.DataFrame(
        [
            {"id": rid, "judge": name, **{k: getattr(r, k) for k in ("score", "method", "error", "raw", "attempts")}}
            for name, ratings in zip(names, verdicts.ratings, strict=True)
            for rid, r in zip(ids, ratings, strict=True)
        ],
        schema=RATINGS_SCHEMA,
    )


def _nanmean(values: np.ndarray) -> float | None:
    return None if values.size == 0 or np.isnan(values).all() else round(float(np.nanmean(values)), 4)
