"""The dedup_published stage (refresh): new records against the latest published version."""

from __future__ import annotations

import numpy as np
import polars as pl

from curation.core.stage import Stage, StageResult, split_rejects
from curation.core.text import text_view
from curation.dedup import exact, minhash, semantic
from curation.dedup.siblings import protected_rows
from curation.dedup.verify import different_task
from curation.publish.indexes import DedupCfg, Index, compute_index, enabled_indexes
from curation.publish.versions import Version, version_name
from schemas.config import Dedup
from schemas.figures import PublishedFigures

STAGE = "dedup_published"
REASON = "duplicate_of_published"
ID_REASON = "published_id"  # a new record reusing the id of a published one (e.g. an edited row)


def build_published_stage(
    previous: Version | None, dedup: Dedup | None, progress: bool = True, keep_siblings: bool = False
) -> Stage:
    """Reject new records that duplicate a record of the published `previous` version.

    Runs after the in-run dedup stages. Per enabled index kind, cheapest first, on the records
    no earlier kind matched: exact keys, MinHash candidates verified like the in-run stage, then
    embedding cosine >= threshold (the in-run search: exhaustive, IVF past 65k). A match is
    rejected as `duplicate_of_published` with duplicate_of = the earliest matching published
    record (semantic: the closest one); the detail names the kind, the similarity and the version. Then a surviving record whose
    id is already published is rejected as `published_id` (a version's ids stay unique). With no
    previous version (the first publish) every record is kept. `keep_siblings`: preference sibling
    answers among the new records are never rejected as `duplicate_of_published`
    (curation.dedup.siblings); a published id is still rejected.
    """

    def run(records: pl.DataFrame) -> StageResult:
        n = records.height
        reason, detail, dup = [None] * n, [None] * n, [None] * n
        figures = PublishedFigures(published_version=previous.number if previous else None)
        spared = np.zeros(n, bool)  # siblings a match would have rejected
        if previous is not None:
            name = version_name(previous.number)
            pending = np.ones(n, bool)
            guarded = np.zeros(n, bool)
            if keep_siblings:
                guarded[protected_rows(records)] = True
            old_row = {rid: i for i, rid in enumerate(previous.kept["id"].to_list())}
            matched: dict[str, int] = {}
            rebuilt = []
            for kind, cfg in enabled_indexes(dedup):
                old = previous.index(kind, cfg, progress)
                if old.rebuilt:
                    rebuilt.append(kind)
                rows = np.flatnonzero(pending)
                subset = records[rows]
                new = compute_index(kind, subset, cfg, progress)
                previous.fresh[kind] = new
                new_rows = {rid: i for i, rid in enumerate(subset["id"].to_list())}
                at = np.array([new_rows[rid] for rid in new.ids], np.int64)  # subset rows of new
                hits, labels = _match(kind, cfg, subset, at, new, previous, old, old_row)
                for k, (pos, label) in enumerate(zip(hits, labels, strict=True)):
                    if pos < 0:
                        continue
                    i = rows[at[k]]
                    if guarded[i]:
                        spared[i] = True  # still pending: later kinds index it for the publish
                        continue
                    reason[i], dup[i] = REASON, old.ids[pos]
                    detail[i] = f"{kind}: {label} in {name}"
                    pending[i] = False
                matched[kind] = int(((hits >= 0) & ~guarded[rows[at]]).sum())
            for i in np.flatnonzero(pending):
                rid = records["id"][int(i)]
                if rid in old_row:
                    reason[i], dup[i], detail[i] = ID_REASON, rid, f"id already published in {name}"
            figures.matched, figures.rebuilt_indexes = matched, rebuilt
            figures.id_conflicts = sum(r == ID_REASON for r in reason)
        if keep_siblings:
            figures.siblings_protected = int(spared.sum())
        result = split_rejects(
            records,
            STAGE,
            pl.Series(reason, dtype=pl.String),
            pl.Series(detail, dtype=pl.String),
            pl.Series(dup, dtype=pl.String),
        )
        result.figures = figures
        return result

    return Stage(STAGE, run)


def _match(
    kind: str,
    cfg: DedupCfg,
    subset: pl.DataFrame,
    at: np.ndarray,
    new: Index,
    previous: Version,
    old: Index,
    old_row: dict[str, int],
) -> tuple[np.ndarray, list[str]]:
    """Per row of `new`: the position in `old` it duplicates (-1: none), and a label."""
    if kind == "exact":
        hits = exact.match_index(new.data, old.data)
        return hits, ["same text after normalising " + (", ".join(cfg.normalize) or "nothing")] * len(hits)  # type: ignore[union-attr]
    if kind == "minhash":
        texts = subset.select(text_view(cfg.view)).to_series()
        old_texts = previous.kept.select(text_view(cfg.view)).to_series()
        old_docs = np.array([old_row[rid] for rid in old.ids], np.int64)
        match, score = minhash.match_index(texts, at, new.data, old_texts, old_docs, old.data, cfg)  # type: ignore[arg-type]
        hits, score = match[at], score[at]
        label = "jaccard {:.2f}" if cfg.verify else "minhash estimate of jaccard {:.2f}"  # type: ignore[union-attr]
        return hits, [label.format(s) for s in score]
    if not len(new) or not len(old):
        return np.full(len(new), -1, np.int64), [""] * len(new)
    hits, cosine = semantic.match_index(new.data, old.data, cfg.threshold)  # type: ignore[union-attr]
    if cfg.verify:  # type: ignore[union-attr]
        # The in-run decision (curation.dedup.verify): a published record that asks for another
        # thing (a reversed direction, another language, other numbers) is no duplicate.
        found = np.flatnonzero(hits >= 0)
        texts = subset[at[found]].select(text_view(cfg.view)).to_series().to_list()
        old_at = [old_row[old.ids[h]] for h in hits[found]]
        published = previous.kept[old_at].select(text_view(cfg.view)).to_series().to_list()
        for k, text, match in zip(found, texts, published, strict=True):
            if different_task(text, match) is not None:
                hits[k] = -1
    return hits, [f"cosine {c:.3f}" for c in cosine]
