"""The select stage: the best sft records within a budget, kept diverse; the rest rejected.

1. Signals of each sft record (curation.select.score): the jury's score from `meta.jury`, its
   rendered tokens (the tokenizer and chat template export uses), IFD from a causal LM
   (curation.select.ifd); combined by the config's weights into a score in [0, 1].
2. Order: best score first, ties by id (the same records in any order select the same).
3. Embeddings of each record's view with the encoder semantic dedup uses (the bundled static
   model by default; the vectors semantic dedup stored when it ran with the same settings, see
   curation.dedup.vectors), then the diversity method (curation.select.diversity) picks within budget.
4. Every sft record not selected is rejected as `not_selected`: `duplicate_of` names the closest
   selected record, `detail` its rank, score, why it was left out and the cosine to that record.

Tokens are counted as export counts them (the whole conversation through the chat template),
so a token budget is what the exported set holds. Raw and preference records, and sft records
the chat template cannot render (export rejects those), pass through untouched. Each candidate's
`meta.select` keeps its rank, score and signals.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from curation.core.corpus import Source, collect
from curation.core.stage import Stage, StageResult, split_rejects
from curation.core.text import text_view
from curation.dedup.encoders import encoder_identity, load_encoder
from curation.dedup.vectors import VectorStore, encoder_settings
from curation.llm.tokenizer import load_tokenizer
from curation.select.diversity import Budget, nearest, pick
from curation.select.ifd import ifd_scores
from curation.select.score import combined, jury_scores, record_tokens
from schemas.bundled import smollm2_dir
from schemas.chat import TemplateName, apply_template
from schemas.figures import SelectFigures
from schemas.record import meta_json
from schemas.select import SelectConfig, SelectDiversity

STAGE = "select"
REASON = "not_selected"
WHY = {"radius": "within the radius of a selected record", "tokens": "over the tokens left", "budget": "budget spent"}


def build_select_stage(
    cfg: SelectConfig,
    tokenizer: str | None,
    chat_template: TemplateName | None,
    ifd_model: str | None,
    progress: bool = True,
    store: VectorStore | None = None,
) -> Stage:
    """`tokenizer`/`chat_template`: what export renders with; `ifd_model`: the causal LM's
    directory for IFD (None = the bundled SmolLM2); `store`: semantic dedup's vectors of the
    records it kept, reused where they are exactly what encoding would give (curation.dedup.vectors)."""

    def run(source: Source) -> StageResult:
        records = collect(source)
        seconds: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[name] = round(now - clock, 3)
            clock = now

        weights = cfg.score.weights()
        sft = np.flatnonzero((records["kind"] == "sft").to_numpy())
        tokens = None
        if cfg.budget.tokens is not None or "length" in weights:
            tokens = record_tokens(records[sft], apply_template(load_tokenizer(tokenizer), chat_template))
            sft, tokens = sft[tokens >= 0], tokens[tokens >= 0]
            lap("tokens")
        part = records[sft]
        ids = part["id"].to_list()
        signals: dict[str, np.ndarray] = {}
        if "jury" in weights:
            signals["jury"] = jury_scores(part)
        if "length" in weights:
            signals["length"] = tokens.astype(float)  # type: ignore[union-attr]
        if "ifd" in weights:
            assert cfg.ifd is not None
            prompts, answers = _prompts_and_answers(part)
            model = Path(ifd_model) if ifd_model else smollm2_dir()
            signals["ifd"] = ifd_scores(prompts, answers, model, cfg.ifd.batch_size, cfg.ifd.max_tokens, progress)
            lap("ifd")
        score = combined(signals, weights, len(ids))
        ranked = pl.DataFrame({"score": score, "id": ids}, schema={"score": pl.Float64, "id": pl.String})
        order = ranked.with_row_index().sort(["score", "id"], descending=[True, False])["index"].to_numpy().astype(np.int64)
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        d = cfg.diversity
        texts = part.select(text_view(d.view)).to_series().fill_null("").to_list()
        embeddings, reused = _embeddings(d, ids, texts, store, progress)
        lap("embed")
        budget = Budget(cfg.budget.records, cfg.budget.tokens, tokens)
        chosen = pick(embeddings, score, order, budget, d.method, d.radius, d.mmr_lambda)
        lap("pick")
        left = np.flatnonzero(chosen.cause != "")
        near, cosine = nearest(embeddings, left, np.sort(chosen.selected))
        lap("neighbours")

        reason = np.full(records.height, None, dtype=object)
        detail = np.full(records.height, None, dtype=object)
        duplicate_of = np.full(records.height, None, dtype=object)
        for k, i in enumerate(left.tolist()):
            row = sft[i]
            reason[row] = REASON
            close = f"; closest selected cosine {cosine[k]:.3f}" if near[k] >= 0 else ""
            detail[row] = f"rank {rank[i]} of {len(ids)}, score {score[i]:.4f}; {WHY[chosen.cause[i]]}{close}"
            duplicate_of[row] = ids[near[k]] if near[k] >= 0 else None
        metas = records["meta"].to_list()
        for i, row in enumerate(sft.tolist()):
            metas[row] = _with_select(metas[row], int(rank[i]), float(score[i]), {s: v[i] for s, v in signals.items()})
        result = split_rejects(
            records.with_columns(pl.Series("meta", metas, pl.String)),
            STAGE,
            pl.Series(reason.tolist(), dtype=pl.String),
            pl.Series(detail.tolist(), dtype=pl.String),
            pl.Series(duplicate_of.tolist(), dtype=pl.String),
        )
        lap("reject")
        result.figures = _figures(cfg, records, chosen, left, signals, score, tokens, seconds, reused)
        return result

    return Stage(STAGE, run)


def _embeddings(
    d: SelectDiversity, ids: list[str], texts: list[str], store: VectorStore | None, progress: bool
) -> tuple[np.ndarray, int]:
    """Each text's vector: from `store` where it holds this text's, the others encoded; and how
    many came from the store."""
    found, vectors = store.lookup(encoder_settings(d), ids, texts) if store else (np.zeros(len(ids), bool), None)
    if not found.any():
        return load_encoder(d.model, d.max_seq_length).encode(texts, None, progress), 0
    missing = np.flatnonzero(~found)
    out = np.empty((len(ids), vectors.shape[1]), np.float32)  # type: ignore[union-attr]
    out[found] = vectors
    if len(missing):
        encoded = load_encoder(d.model, d.max_seq_length).encode([texts[i] for i in missing], None, progress)
        out[missing] = encoded
    return out, int(found.sum())


def _prompts_and_answers(part: pl.DataFrame) -> tuple[list[list[dict]], list[str]]:
    """Each sft record's turns before its last answer, and that answer."""
    prompts, answers = [], []
    for messages in part["messages"].to_list():
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
        prompts.append(messages[:last])
        answers.append(messages[last]["content"] if last < len(messages) else "")
    return prompts, answers


def _with_select(meta: str | None, rank: int, score: float, signals: dict[str, float]) -> str:
    data = orjson.loads(meta) if meta else {}
    shown = {s: None if np.isnan(v) else round(float(v), 4) for s, v in signals.items()}
    data["select"] = {"rank": rank, "score": round(score, 4), **shown}
    return meta_json(data)


def _figures(
    cfg: SelectConfig,
    records: pl.DataFrame,
    chosen,  # noqa: ANN001  # curation.select.diversity.Pick
    left: np.ndarray,
    signals: dict[str, np.ndarray],
    score: np.ndarray,
    tokens: np.ndarray | None,
    seconds: dict[str, float],
    reused: int,
) -> SelectFigures:
    d, selected = cfg.diversity, chosen.selected
    causes = dict(zip(*np.unique(chosen.cause[left].astype(str), return_counts=True), strict=True)) if len(left) else {}
    figures = SelectFigures(
        budget=cfg.budget.model_dump(exclude_none=True), weights=cfg.score.weights(), method=d.method,
        encoder=encoder_identity(d.model), candidates=len(score), selected=len(selected), not_selected=len(left),
        not_selected_by={str(k): int(v) for k, v in sorted(causes.items())},
        passed_through=records.height - len(score),
        mean_score_selected=round(float(score[selected].mean()), 4) if len(selected) else None,
        timings=seconds,  # the stage's own "seconds" is its total
        embeddings_reused=reused,
    )
    if d.method == "radius":
        figures.radius = d.radius
    if d.method == "mmr":
        figures.mmr_lambda = d.mmr_lambda
    if cfg.budget.records is not None:
        figures.short_of_budget = max(0, min(cfg.budget.records, len(score)) - len(selected))
    if tokens is not None:
        figures.tokens_used = int(tokens[selected].sum())

    def mean_selected(signal: str) -> float | None:
        values = signals[signal][selected]
        finite = values[np.isfinite(values)]
        return round(float(finite.mean()), 4) if len(finite) else None

    if "jury" in signals:
        figures.mean_jury_selected = mean_selected("jury")
    if "length" in signals:
        figures.mean_length_selected = mean_selected("length")
    if "ifd" in signals:
        figures.mean_ifd_selected = mean_selected("ifd")
    return figures
