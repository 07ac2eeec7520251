"""The `decontamination` stage: records that contain benchmark items are rejected.

Rule (n-grams): a record is contaminated by a benchmark text (a turn or paragraph of an item,
curation.decontamination.index) when at least `min_coverage` of that text's words lie inside
word `ngram`-grams the record shares with it, after normalisation (NFKC, case, punctuation and
whitespace). Measured on the benchmark side, so a test item embedded in a longer prompt is
caught as surely as a copy, and a few edited words only uncover the n-grams around them (an
n-gram of fewer than n / 2 distinct words, such as a run of zeros, counts for nothing). A
benchmark text shorter than `ngram` words must appear whole, in order (texts with fewer than
`min_words` distinct words are not checked). Reason
`benchmark_overlap`; `detail` names the benchmark, the item (id, source location, part) and the
overlap.

Then, with `semantic`, records whose view text is within `threshold` cosine of a benchmark text
(the semantic dedup encoder and its exhaustive / IVF search) are rejected as
`benchmark_paraphrase`: rephrased test items that share no long n-gram.

Candidates are found with n-gram hashes in numpy (one lookup per record n-gram in the sorted
index), and only records with a hit are verified in Python on the words themselves, so hash
collisions never reject. Every match is also written to RUN_DIR/decontamination/matches.parquet
with the benchmark text beside the record id (the report's side-by-side examples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from curation.core.engine import Engine, LocalEngine
from curation.core.stage import Stage, StageResult, split_rejects
from curation.core.text import text_view
from curation.decontamination.index import BenchmarkIndex, build_index
from curation.decontamination.ngrams import gram_hashes, normalised_words, word_hashes
from curation.dedup.encoders import load_encoder
from curation.dedup.search import KeptIndex
from schemas.config import Decontamination
from schemas.figures import BenchmarkFigures, DecontaminationFigures

STAGE = "decontamination"
MATCHES = "matches.parquet"
MATCH_SCHEMA = {
    "id": pl.String, "reason": pl.String, "benchmark": pl.String, "item": pl.String, "item_source": pl.String,
    "part": pl.String, "benchmark_text": pl.String, "score": pl.Float64,
}


def build_decontamination_stage(cfg: Decontamination, out_dir: Path | None, engine: Engine | None = None) -> Stage:
    """The index is built (or read from its cache) here, once; `engine` checks partitions of
    the records against it. Matches go to `out_dir`/matches.parquet when `out_dir` is given."""
    index = build_index(cfg)
    semantic = _SemanticCheck(cfg, index) if cfg.semantic else None

    def label(records: pl.DataFrame) -> tuple[pl.Series, pl.Series, pl.DataFrame]:
        words = records.select(normalised_words(text_view(cfg.view))).to_series()
        found = overlaps(words, index, cfg.min_coverage)
        if semantic is not None:
            unmatched = np.setdiff1d(np.arange(records.height), found["row"].to_numpy())
            found = pl.concat([found, semantic.matches(records, unmatched)])
        reason = pl.repeat(None, records.height, dtype=pl.String, eager=True)
        detail = reason.clone()
        if found.height:
            rows = found["row"].to_numpy()
            reason = reason.scatter(rows, found["reason"])
            detail = detail.scatter(rows, found["detail"])
        matches = found.with_columns(id=records["id"].gather(found["row"])).select(list(MATCH_SCHEMA))
        return reason, detail, matches

    def run(records: pl.DataFrame) -> StageResult:
        parts = (engine or LocalEngine()).map(label, records, STAGE)
        reason = pl.concat([p[0] for p in parts]) if parts else pl.Series([], dtype=pl.String)
        detail = pl.concat([p[1] for p in parts]) if parts else pl.Series([], dtype=pl.String)
        matches = pl.concat([p[2] for p in parts]) if parts else pl.DataFrame(schema=MATCH_SCHEMA)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            matches.write_parquet(out_dir / MATCHES)
        result = split_rejects(records, STAGE, reason, detail)
        result.figures = DecontaminationFigures(benchmarks=_figures(index, matches), ngram=cfg.ngram,
                                                min_coverage=cfg.min_coverage)
        return result

    return Stage(STAGE, run, streams=True)


def _figures(index: BenchmarkIndex, matches: pl.DataFrame) -> dict[str, BenchmarkFigures]:
    counts = matches.group_by("benchmark", "reason").len()
    by = {(b, r): n for b, r, n in counts.iter_rows()}
    return {
        name: BenchmarkFigures(**figures, benchmark_overlap=by.get((name, "benchmark_overlap"), 0),
                               benchmark_paraphrase=by.get((name, "benchmark_paraphrase"), 0))
        for name, figures in index.figures.items()
    }


def overlaps(words: pl.Series, index: BenchmarkIndex, min_coverage: float) -> pl.DataFrame:
    """(row, reason, detail, benchmark, item, item_source, part, benchmark_text, score) for every
    record (a row of `words`) contaminated by a benchmark text: the text it covers most."""
    candidates = _candidates(words, index)
    best: dict[int, tuple[float, int, str]] = {}
    record_grams: dict[int, set] = {}
    for row, text in candidates:
        record = words[int(row)].to_list()
        text_words = index.words(int(text))
        if len(text_words) >= index.ngram:
            grams = record_grams.get(row)
            if grams is None:
                grams = record_grams[row] = _grams(record, index.ngram)
            covered = _covered(text_words, grams, index.ngram)
            share = covered / len(text_words)
            what = f"{covered}/{len(text_words)} of its words in shared {index.ngram}-grams ({share:.2f})"
        else:
            share = 1.0 if _contains(record, text_words) else 0.0
            what = f"all {len(text_words)} of its words in order (shorter than {index.ngram})"
        if share >= min_coverage and share > best.get(row, (-1.0, 0, ""))[0]:
            best[row] = (share, int(text), what)
    rows = sorted(best)
    texts = index.texts[[best[r][1] for r in rows]] if rows else index.texts.clear()
    details = [
        f"{t['benchmark']}: item {t['item']} ({t['source']}, {t['part']}): {best[r][2]}"
        for r, t in zip(rows, texts.iter_rows(named=True), strict=True)
    ]
    return _found(rows, "benchmark_overlap", details, texts, [best[r][0] for r in rows])


def _found(rows: list[int], reason: str, details: list[str], texts: pl.DataFrame, scores: list[float]) -> pl.DataFrame:
    return pl.DataFrame({
        "row": pl.Series(rows, dtype=pl.Int64),
        "reason": pl.Series([reason] * len(rows), dtype=pl.String),
        "detail": pl.Series(details, dtype=pl.String),
        "benchmark": texts["benchmark"], "item": texts["item"], "item_source": texts["source"],
        "part": texts["part"], "benchmark_text": texts["text"],
        "score": pl.Series(scores, dtype=pl.Float64),
    })


def _candidates(words: pl.Series, index: BenchmarkIndex) -> np.ndarray:
    """Unique (record row, benchmark text) pairs that share an indexed gram hash."""
    hashes, starts = word_hashes(words)
    pairs = []
    for table, texts, length in (
        (index.long_hash, index.long_text, index.ngram),
        (index.short_hash, index.short_text, index.min_words),
    ):
        if not len(table):
            continue
        grams, position = gram_hashes(hashes, starts, length)
        # A hash-set lookup (polars, all cores) finds the few hits; only they are located in the table.
        hit = pl.Series(grams, dtype=pl.UInt64).is_in(pl.Series(table, dtype=pl.UInt64).implode()).arg_true().to_numpy()
        if not len(hit):
            continue
        lo = np.searchsorted(table, grams[hit], side="left")
        hi = np.searchsorted(table, grams[hit], side="right")
        hit, lo, hi = hit[hi > lo], lo[hi > lo], hi[hi > lo]
        count = hi - lo
        # Every (gram, indexed text) pair of the hits: the ranges lo..hi laid end to end.
        at = np.repeat(lo - np.cumsum(np.concatenate([[0], count[:-1]])), count) + np.arange(count.sum())
        rows = np.repeat(np.searchsorted(starts, position[hit], side="right") - 1, count)
        pairs.append(np.stack([rows, texts[at]], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(pairs).astype(np.int64), axis=0)


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _covered(text: list[str], grams: set[tuple[str, ...]], n: int) -> int:
    """Words of `text` inside at least one of its n-grams that is in `grams`. An n-gram of fewer
    than n / 2 distinct words (`0 0 0 0 ...`, `- - -`) counts for nothing: runs like that are
    shared by chance."""
    covered = np.zeros(len(text), bool)
    for i in range(len(text) - n + 1):
        gram = tuple(text[i : i + n])
        if gram in grams and 2 * len(set(gram)) >= n:
            covered[i : i + n] = True
    return int(covered.sum())


def _contains(record: list[str], text: list[str]) -> bool:
    return f" {' '.join(text)} " in f" {' '.join(record)} "


class _SemanticCheck:
    """Benchmark texts embedded once; a record's closest one at cosine >= threshold."""

    def __init__(self, cfg: Decontamination, index: BenchmarkIndex) -> None:
        assert cfg.semantic is not None
        self.cfg, self.settings, self.texts = cfg, cfg.semantic, index.texts
        encoder = load_encoder(self.settings.model, self.settings.max_seq_length)
        self.embeddings = encoder.encode(index.texts["text"].to_list(), self.settings.batch_size)

    def matches(self, records: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
        texts = records.select(text_view(self.cfg.view)).to_series().gather(rows)
        keep = (texts.str.strip_chars() != "").to_numpy()
        rows, texts = rows[keep], texts.filter(keep)
        if not len(rows) or not len(self.embeddings):
            return _found([], "benchmark_paraphrase", [], self.texts.clear(), [])
        encoder = load_encoder(self.settings.model, self.settings.max_seq_length)
        vectors = encoder.encode(texts.to_list(), self.settings.batch_size)
        search = KeptIndex(lambda keys: self.embeddings[keys], self.embeddings.shape[1], self.settings.threshold)
        search.add(np.arange(len(self.embeddings)), self.embeddings)
        match, cosine = search.best_match(vectors)
        hit = np.flatnonzero(match >= 0)
        matched = self.texts[match[hit].tolist()] if len(hit) else self.texts.clear()
        details = [
            f"{t['benchmark']}: item {t['item']} ({t['source']}, {t['part']}): cosine {c:.3f}"
            for t, c in zip(matched.iter_rows(named=True), cosine[hit], strict=True)
        ]
        return _found(rows[hit].tolist(), "benchmark_paraphrase", details, matched, cosine[hit].astype(float).tolist())
