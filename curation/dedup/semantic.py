"""Semantic dedup (SemDeDup-style): sentence embeddings and a cosine threshold.

1. Embed every record's view text (default `no_system`: a shared system prompt says nothing of
   a record) with the configured encoder (curation.dedup.encoders; default: the static model
   distilled from the bundled all-MiniLM-L6-v2), L2-normalised so a dot product is the cosine.
   Lines shared by many records (`cfg.shared_lines` of the first 10,000 records: a tool list or preamble
   every prompt repeats) are left out first, or they dominate every embedding. The whole text is
   embedded unless cfg.max_seq_length caps its tokens. Embeddings are written to a scratch file as each
   partition is embedded (on this process or on Ray workers): the stage never holds all of them.
2. Walk the embeddings in input order, a block of BLOCK_ROWS at a time: a record is a duplicate
   of the most similar earlier *kept* record if their cosine is >= threshold, else it is kept and
   joins the search
   index (curation.dedup.search: exhaustive up to 65,536 kept records, a re-scored IVF index
   beyond). Inside a block, records with no kept match are resolved against each other in order.
3. With `cfg.verify` (the default), each removal is read again as a pair with its kept record
   (curation.dedup.verify): when the words that differ change the task (ascending / descending,
   another programming language, other numbers, a swapped direction), the record is kept; the
   records kept that way are then deduplicated among themselves, checked the same way.

Kept rule: the earliest record in input order (row position in the incoming frame) is kept, and
every removal names the closest earlier kept record (`duplicate_of`, cosine in `detail`), so
nothing is removed as a duplicate of a removed record. Records whose view text is empty (or only
whitespace) are never duplicates. With `keep_siblings` (the run builds preference pairs from the
data's answers), sibling answers to one prompt are kept (curation.dedup.siblings): they are
candidate answers for a pair, not duplicates.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from curation.core.corpus import Corpus, Source, shards, take
from curation.core.engine import Engine, LocalEngine
from curation.core.stage import Stage, StageResult
from curation.core.text import text_view
from curation.dedup.common import split_duplicates
from curation.dedup.encoders import encoder_identity, load_encoder
from curation.dedup.search import BLOCK_SIMILARITIES, EXACT_ROWS, KeptIndex, release_freed_heap
from curation.dedup.siblings import spare_siblings
from curation.dedup.vectors import VectorStore, encoder_settings
from curation.dedup.verify import different_task
from schemas.config import SemanticDedup
from schemas.figures import SemanticFigures

STAGE = "dedup_semantic"
BLOCK_ROWS = 4096  # embeddings searched and resolved at a time
READ_ROWS = 16_384  # embeddings read from the file at a time when many rows are read in order
SHARED_MIN_RECORDS = 3  # a line must be in at least this many records to count as shared
SHARED_SAMPLE_ROWS = 10_000  # shared lines are counted in the first this many records
TRIANGLE_ROWS = 256  # rows of the block-triangular product in greedy_duplicates
VERIFY_PAIRS = 32_768  # removals whose pair texts are read at a time to verify them (~40 MB)


def build_semantic_stage(
    cfg: SemanticDedup, progress: bool = True, engine: Engine | None = None, keep_siblings: bool = False,
    store: VectorStore | None = None,
) -> Stage:
    """`engine` embeds partitions of the records (default: this process; on Ray, each worker
    process loads the encoder once); the search runs in this process, on the embeddings file.
    `keep_siblings`: preference sibling answers are never removed (curation.dedup.siblings).
    `store`: where the kept records' vectors go for a later step (curation.dedup.vectors)."""
    engine = engine or LocalEngine()

    def run(records: Source) -> StageResult:
        shared = shared_lines(records, cfg)

        def embed_rows(part: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            texts = without_lines(part.select(text_view(cfg.view)).to_series(), shared)
            rows = np.flatnonzero((texts.str.strip_chars() != "").to_numpy())
            return rows, embed(texts.gather(rows).to_list(), cfg, progress and engine.in_process)

        scratch = records.scratch if isinstance(records, Corpus) else None
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="embeddings-", dir=scratch) as tmp:
            # Embeddings go to disk as they arrive: a corpus's worth is too much to hold.
            embeddings = EmbeddingFile(Path(tmp) / "embeddings.f32")
            row_parts = []
            parts = engine.imap_partitions(embed_rows, records, STAGE)
            for (part_rows, vectors), start in zip(parts, engine.starts(records), strict=True):
                row_parts.append(part_rows + start)
                embeddings.append(vectors)
            rows = np.concatenate(row_parts).astype(np.int64)
            kept_as, sim, search = greedy_kept(embeddings, cfg.threshold, _exact_rows(cfg, embeddings.rows), progress)
            release_freed_heap()  # the index's lists, freed, would stay resident under what follows
            root = np.arange(records.height)
            root[rows] = rows[kept_as]
            cosine = np.zeros(records.height, np.float32)
            cosine[rows] = sim

            def vectors_of(at: np.ndarray) -> np.ndarray:  # records' (sorted rows), read back from the file
                return embeddings.read(np.searchsorted(rows, at))

            vetoed = verify_pairs(records, root, cosine, cfg, shared, vectors_of) if cfg.verify else {}
            if store is not None:
                kept = rows[root[rows] == rows]
                view = text_view(cfg.view)
                store.write(encoder_settings(cfg), records, kept, vectors_of,
                            lambda at: without_lines(take(records, at, view), shared).to_list())
        root, spared = spare_siblings(records, root, engine) if keep_siblings else (root, 0)
        dup = root != np.arange(records.height)
        detail = pl.Series([f"cosine {s:.3f}" for s in cosine[dup]], dtype=pl.String)
        result = split_duplicates(records, STAGE, "semantic_duplicate", root, detail)
        figures = SemanticFigures(encoder=encoder_identity(cfg.model), search=search, embedded=len(rows),
                                  shared_lines_left_out=len(shared))
        if cfg.verify:
            figures.kept_as_different_task = vetoed
        if keep_siblings:
            figures.siblings_protected = spared
        result.figures = figures
        return result

    return Stage(STAGE, run, streams=True)


def shared_lines(records: Source, cfg: SemanticDedup) -> frozenset[str]:
    """Lines (stripped) in at least `cfg.shared_lines` of the first SHARED_SAMPLE_ROWS records
    and in SHARED_MIN_RECORDS of them: shared preambles, tool lists, boilerplate. The same
    records whatever the shard size, so a streamed run decides as the in-memory one does."""
    if cfg.shared_lines is None or records.height == 0:
        return frozenset()
    texts: list[str] = []
    for shard, _ in shards(records):
        texts += shard.head(SHARED_SAMPLE_ROWS - len(texts)).select(text_view(cfg.view)).to_series().to_list()
        if len(texts) >= SHARED_SAMPLE_ROWS:
            break
    counts = Counter(line for text in texts for line in {x.strip() for x in text.split("\n")} if line)
    least = max(SHARED_MIN_RECORDS, cfg.shared_lines * len(texts))
    return frozenset(line for line, n in counts.items() if n >= least)


def without_lines(texts: pl.Series, shared: frozenset[str]) -> pl.Series:
    """Each text without its shared lines; a text of shared lines only stays whole (two copies
    of one preamble-only record are still duplicates)."""
    if not shared:
        return texts

    def strip(text: str) -> str:
        kept = [line for line in text.split("\n") if line.strip() not in shared]
        return "\n".join(kept) if any(line.strip() for line in kept) else text

    return pl.Series(texts.name, [strip(t) for t in texts.to_list()], dtype=pl.String)


def verify_pairs(
    records: Source, root: np.ndarray, cosine: np.ndarray, cfg: SemanticDedup, shared: frozenset[str],
    vectors: Callable[[np.ndarray], np.ndarray],
) -> dict[str, int]:
    """Keep (root[i] = i) every duplicate whose text asks for another thing than its kept
    record's (curation.dedup.verify); returns how many, by reason. Only the candidate pairs'
    texts are read. The records kept here did not join the search, so they are then deduplicated
    among themselves (greedy, checked the same way): two rewordings of one instruction that were
    both kept apart from its reversed twin are still one. A later record is not compared with
    them again (it may stay: a missed removal, never a wrong one)."""
    at = np.flatnonzero(root != np.arange(records.height))
    released: dict[int, str] = {}  # row -> why it was kept, in row order
    texts: dict[int, str] = {}  # the released rows' texts
    # A chunk of pairs at a time: the texts of every pair at once grow with the corpus.
    for lo in range(0, len(at), VERIFY_PAIRS):
        pairs = at[lo : lo + VERIFY_PAIRS]
        rows = np.unique(np.concatenate([pairs, root[pairs]]))  # take() reads sorted rows
        chunk = without_lines(take(records, rows, text_view(cfg.view)), shared).to_list()
        for i, j in zip(np.searchsorted(rows, pairs), np.searchsorted(rows, root[pairs]), strict=True):
            why = different_task(chunk[i], chunk[j])
            if why is not None:
                row = int(rows[i])
                root[row], cosine[row], released[row], texts[row] = row, 0, why, chunk[i]
        del chunk
    kept = list(released)
    if len(kept) > 1:
        kept_as, sim = greedy_duplicates(vectors(np.array(kept)), cfg.threshold)
        for k, m in enumerate(kept_as):
            i, j = kept[k], kept[m]
            if m != k and different_task(texts[i], texts[j]) is None:
                root[i], cosine[i] = j, sim[k]
                del released[i]
    return dict(sorted(Counter(released.values()).items()))


def _exact_rows(cfg: SemanticDedup, n: int) -> int:
    """Kept records searched exhaustively: `auto` switches to the IVF index past EXACT_ROWS,
    `ivf` after the first block (small tests of the index), `exact` never."""
    return {"auto": EXACT_ROWS, "ivf": BLOCK_ROWS, "exact": max(n, 1)}[cfg.search]


def embed(texts: list[str], cfg: SemanticDedup, progress: bool) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text."""
    return load_encoder(cfg.model, cfg.max_seq_length).encode(texts, cfg.batch_size, progress)


def greedy_kept(
    embeddings: EmbeddingFile, threshold: float, exact_rows: int | None = None, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, str]:
    """For embeddings in file order: the one each is kept as (itself, or the most similar earlier
    kept one if at cosine >= threshold), that cosine (0 for kept ones), and how the kept ones
    were searched ("exact", or "exact, then ivf from N kept")."""
    n = embeddings.rows
    kept_as, cosine = np.arange(n), np.zeros(n, np.float32)
    index = KeptIndex(embeddings.read, max(embeddings.dim, 1), threshold, exact_rows)
    switched_at = None
    with tqdm(total=n, desc=f"{STAGE} search", unit="doc", disable=not progress or n < 50_000) as bar:
        for lo, block in zip(range(0, n, BLOCK_ROWS), embeddings.blocks(BLOCK_ROWS), strict=True):
            match, sim = index.best_match(block)
            inner, inner_sim = greedy_duplicates(block, threshold, np.where(match >= 0, sim, -np.inf))
            at = lo + np.arange(len(block))
            kept_as[at] = np.where(inner == -1, match, lo + inner)
            cosine[at] = inner_sim
            before = index.kind
            kept = inner == np.arange(len(block))
            index.add(at[kept], block[kept])
            if before != index.kind:
                switched_at = len(index)
            bar.update(len(block))
    if switched_at is None:
        return kept_as, cosine, "exact"
    return kept_as, cosine, f"exact, then ivf from {switched_at} kept ({index.rebuilds} list builds)"


class EmbeddingFile:
    """Embedding rows appended to a float32 file and read back in blocks or memory-mapped: the
    semantic stage never holds every embedding."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows, self.dim = path, 0, 0
        path.touch()

    def append(self, block: np.ndarray) -> None:
        if len(block):
            self.dim = block.shape[1]
            with self.path.open("ab") as f:
                f.write(np.ascontiguousarray(block, np.float32).tobytes())
            self.rows += len(block)

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        with self.path.open("rb") as f:
            for lo in range(0, self.rows, size):
                count = min(size, self.rows - lo)
                yield np.fromfile(f, np.float32, count * self.dim).reshape(count, self.dim)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The embeddings at `rows`, in that order. Many increasing rows (rebuilding the search
        index) are read a block at a time; others one by one (pread). Not through a memory map:
        the kernel maps the cached pages around each one touched, so re-scoring 16k candidates
        mapped most of a 1 GB file into the process at once."""
        if not len(rows):
            return np.zeros((0, self.dim), np.float32)
        if len(rows) > READ_ROWS and (np.diff(rows) > 0).all():
            out = np.empty((len(rows), self.dim), np.float32)
            for lo, block in zip(range(0, self.rows, READ_ROWS), self.blocks(READ_ROWS), strict=True):
                a, b = np.searchsorted(rows, [lo, lo + len(block)])
                out[a:b] = block[rows[a:b] - lo]
            return out
        unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(unique), self.dim), np.float32)
        view, size = memoryview(out.data).cast("B"), self.dim * 4
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for k, row in enumerate(unique.tolist()):
                os.preadv(fd, [view[k * size : (k + 1) * size]], row * size)
        finally:
            os.close(fd)
        return out[inverse]


def greedy_duplicates(
    embeddings: np.ndarray, threshold: float, outside: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For rows in input order: the row each one is kept as (itself, or the most similar earlier
    kept row if at cosine >= threshold) and that cosine (0 for kept rows).

    `outside`: per row, the cosine of its best match among kept vectors before these rows (-inf
    for none); a row whose outside match beats every earlier kept row here is kept as -1."""
    n = len(embeddings)
    kept_as, sim, kept = np.arange(n), np.zeros(n, np.float32), np.ones(n, bool)
    prior = np.full(n, -np.inf, np.float32) if outside is None else outside
    # Row chunks against the rows up to their end only: the lower triangle of the square, about
    # half its products, and only the chunk's own square needs masking (measured 2-3x faster
    # than the whole square at 4,096 rows).
    block = max(1, min(TRIANGLE_ROWS, BLOCK_SIMILARITIES // max(n, 1)))
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        sims = embeddings[lo:hi] @ embeddings[:hi].T
        sims[:, lo:hi][np.triu_indices(hi - lo)] = -1  # only earlier rows
        # Rows without any match stay kept; the others take their closest kept match (ties:
        # the earlier one, so an outside match first).
        for offset in np.flatnonzero((sims.max(axis=1) >= threshold) | (prior[lo:hi] >= threshold)):
            i = lo + offset
            candidates = np.where(kept[:i], sims[offset, :i], -np.inf)
            best = int(candidates.argmax()) if i else 0
            inside = candidates[best] if i else -np.inf
            if prior[i] >= threshold and prior[i] >= inside:
                kept_as[i], sim[i], kept[i] = -1, prior[i], False
            elif inside >= threshold:
                kept_as[i], sim[i], kept[i] = best, inside, False
    return kept_as, sim


# --- published index (incremental refresh): stored embeddings, new records looked up --------


def index_settings(cfg: SemanticDedup) -> dict:
    """What produced stored embeddings (the encoder and how much of each text it reads): an
    index stored under other settings is re-embedded, never compared with these."""
    return encoder_settings(cfg)


def match_index(embeddings: np.ndarray, index: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For each new (L2-normalised) embedding, the row of `index` most similar to it if at cosine
    >= threshold (the closest published record), or -1, and that cosine: the same search as
    within a run (exhaustive up to EXACT_ROWS published rows, the re-scored IVF index beyond)."""
    published = KeptIndex(lambda rows: index[rows], index.shape[1] if index.ndim == 2 else 1, threshold)
    for lo in range(0, len(index), BLOCK_ROWS):
        published.add(np.arange(lo, min(lo + BLOCK_ROWS, len(index))))
    return published.best_match(np.ascontiguousarray(embeddings, np.float32))
