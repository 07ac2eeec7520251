"""Find, for each embedding, the most similar kept embedding at cosine >= threshold.

Semantic dedup walks the records in input order and keeps a record unless an earlier kept one
is within the threshold, so the only search it needs is "the closest kept match of this vector"
(the match names the removed record's `duplicate_of`). `KeptIndex` holds the kept vectors and
answers it two ways:

- **exact** (blockwise matrix products) while it holds up to `EXACT_ROWS` vectors: every pair is
  compared, and that is cheaper than any index at this size (20k documents: ~1.3 s on 2 cores);
- **IVF** (faiss `IndexIVFScalarQuantizer`, 8-bit codes) beyond: k-means lists (one per 64 kept
  vectors, up to 4,096) trained on an even sample of the kept vectors (40 a list), retrained each time the
  kept set has grown 4x; a query scans its 48 nearest lists for its 16 most similar vectors,
  and every candidate is re-scored in float32 from the embeddings themselves (a file on disk,
  read per block), so a reported cosine is exact. Measured against the exhaustive search on
  100k documents in bench_semantic.

Memory: exact holds up to EXACT_ROWS float32 vectors (64 MB at 256 dimensions); the IVF index
holds one byte per dimension and two 8-byte ids per kept vector (~272 B at 256 dimensions); the
float32 vectors stay in the file.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

EXACT_ROWS = 65_536  # kept vectors searched exhaustively before switching to the IVF index
ROWS_PER_LIST = 64  # IVF lists: one per 64 kept vectors when (re)built
MAX_LISTS = 4096
PROBES = 48  # lists scanned per query: the nearest 48, however many there are
REBUILD_GROWTH = 4  # rebuild the lists when the kept set has grown 4x since they were trained
NEIGHBOURS = 16  # candidates per query from the IVF index (re-scored exactly)
BLOCK_SIMILARITIES = 1 << 24  # float32 similarities computed at once (64 MB)
ADD_ROWS = 65_536  # vectors read back at a time when the lists are rebuilt
TRAIN_PER_LIST = 40  # training vectors per list (faiss asks for 39): 160 MB at 4,096 lists
QUERY_ROWS = 1024  # queries whose candidates are re-scored at a time (16 MB of candidate vectors)

Rows = Callable[[np.ndarray], np.ndarray]  # keys -> their float32 vectors


def release_freed_heap() -> None:
    """Hand memory freed to the C heap back to the OS (glibc; elsewhere nothing). The IVF lists
    are many heap blocks; once the index is dropped they stay resident, and neither numpy's large
    arrays, Python's objects nor polars' allocator reuse them."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class KeptIndex:
    """Vectors added in increasing key order; `best_match` returns, per query, the key of the
    most similar one if its cosine is >= threshold, else -1.

    `rows(keys)` returns the float32 vectors of keys (from memory or from the embeddings file):
    the IVF path re-scores its candidates with it and reads the kept vectors back to rebuild.
    """

    def __init__(self, rows: Rows, dim: int, threshold: float, exact_rows: int | None = None) -> None:
        self.rows, self.dim, self.threshold = rows, dim, threshold
        self.exact_rows = EXACT_ROWS if exact_rows is None else exact_rows
        self._buffer = np.empty((0, dim), np.float32)
        self._keys = np.empty(0, np.int64)  # every kept key, in order
        self._count = 0
        self._ivf = None
        self._trained_at = 0
        self.rebuilds = 0

    def __len__(self) -> int:
        return self._count

    @property
    def kind(self) -> str:
        return "ivf" if self._ivf is not None else "exact"

    def add(self, keys: np.ndarray, vectors: np.ndarray | None = None) -> None:
        """Add `keys` (increasing, after every key added so far) with their vectors (default: read)."""
        if not len(keys):
            return
        block = np.ascontiguousarray(self.rows(keys) if vectors is None else vectors, np.float32)
        if self._ivf is not None:
            self._append_keys(keys)
            self._ivf.add_with_ids(block, keys.astype(np.int64))
            self._count += len(keys)
            if self._count >= REBUILD_GROWTH * self._trained_at and self._lists(self._count) > self._ivf.nlist:
                self._build_ivf()
            return
        self._append_exact(keys, block)
        self._count += len(keys)
        if self._count > self.exact_rows:
            self._build_ivf()

    def best_match(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(key, cosine) per query row: the most similar added vector if at cosine >= threshold, else (-1, 0)."""
        n = len(queries)
        key, cosine = np.full(n, -1, np.int64), np.zeros(n, np.float32)
        if not n or not self._count:
            return key, cosine
        if self._ivf is not None:
            return self._best_match_ivf(np.ascontiguousarray(queries, np.float32))
        held = self._buffer[: self._count]
        rows = max(1, BLOCK_SIMILARITIES // self._count)
        for lo in range(0, n, rows):
            sims = queries[lo : lo + rows] @ held.T
            best = sims.argmax(axis=1)  # ties: the earliest (keys are held in increasing order)
            top = sims[np.arange(len(sims)), best]
            found = np.flatnonzero(top >= self.threshold)
            key[lo + found] = self._keys[best[found]]
            cosine[lo + found] = top[found]
        return key, cosine

    def _append_exact(self, keys: np.ndarray, block: np.ndarray) -> None:
        need = self._count + len(keys)
        if need > len(self._buffer):
            # Doubling, but never past exact_rows: the block that crosses it is held exactly
            # (the buffer is dropped for the IVF index right after), not in a buffer of twice that.
            grown = max(need, min(2 * len(self._buffer), self.exact_rows), 1024)
            self._buffer = np.resize(self._buffer, (grown, self.dim))
        self._buffer[self._count : need] = block
        self._append_keys(keys)

    def _append_keys(self, keys: np.ndarray) -> None:
        need = self._count + len(keys)
        if need > len(self._keys):
            self._keys = np.resize(self._keys, max(need, 2 * len(self._keys), 1024))
        self._keys[self._count : need] = keys

    @staticmethod
    def _lists(count: int) -> int:
        return max(1, min(MAX_LISTS, count // ROWS_PER_LIST))

    def _build_ivf(self) -> None:
        """(Re)build the IVF index over every kept vector: lists trained on an even sample of
        them, one list per ROWS_PER_LIST vectors up to MAX_LISTS."""
        import faiss

        keys = self._keys[: self._count]
        lists = self._lists(len(keys))
        self._ivf = None  # the old lists go before the new ones are trained: one index at a time
        release_freed_heap()  # training's large arrays are mapped anew, they would not reuse it
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(self.dim), self.dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.seed = 0  # the same lists on every run and engine
        sample = keys[:: max(1, len(keys) // (TRAIN_PER_LIST * lists))]
        train_sq_ivf(index, self._read(sample))
        del sample
        index.nprobe = min(PROBES, lists)
        for lo in range(0, len(keys), ADD_ROWS):
            chunk = keys[lo : lo + ADD_ROWS]
            index.add_with_ids(self._read(chunk), chunk)
        self._ivf, self._trained_at = index, len(keys)
        self._buffer = np.empty((0, self.dim), np.float32)  # the exact path's copy is no longer needed
        self.rebuilds += 1

    def _read(self, keys: np.ndarray) -> np.ndarray:
        if len(self._buffer):  # still held by the exact path
            return self._buffer[np.searchsorted(self._keys[: self._count], keys)]
        return np.ascontiguousarray(self.rows(keys), np.float32)

    def _best_match_ivf(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [self._best_match_ivf_rows(queries[lo : lo + QUERY_ROWS]) for lo in range(0, len(queries), QUERY_ROWS)]
        return np.concatenate([k for k, _ in parts]), np.concatenate([c for _, c in parts])

    def _best_match_ivf_rows(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, found = self._ivf.search(queries, min(NEIGHBOURS, self._count))
        valid = found >= 0
        candidates = np.where(valid, found, 0)
        # Exact float32 cosines of the candidates (the codes only shortlist them).
        rows = self.rows(candidates.ravel()).reshape(*candidates.shape, self.dim)
        sims = np.where(valid, np.einsum("qd,qkd->qk", queries, rows), -np.inf)
        # The most similar; among equal cosines the earliest (candidates come in any order).
        best = np.lexsort((candidates, -sims), axis=1)[:, 0]
        top = sims[np.arange(len(queries)), best]
        hit = np.flatnonzero(top >= self.threshold)
        key, cosine = np.full(len(queries), -1, np.int64), np.zeros(len(queries), np.float32)
        key[hit] = candidates[hit, best[hit]]
        cosine[hit] = top[hit]
        return key, cosine


def train_sq_ivf(index, x: np.ndarray) -> None:
    """What faiss's `IndexIVFScalarQuantizer.train(x)` does, to the bit, without the copies of
    the training set it holds beside `x`: k-means lists on `x`, then the 8-bit range (per
    dimension, min to max) of the residuals of a seeded subsample of `train_encoder_num_vectors`
    rows, read here a chunk at a time. faiss copies the subsample, its residuals and their
    transpose (~300 MB at 4,096 lists of 256 dimensions)."""
    import faiss

    if not (index.by_residual and index.sq.rangestat == faiss.ScalarQuantizer.RS_minmax and index.sq.rangestat_arg == 0
            and index.sq.qtype == faiss.ScalarQuantizer.QT_8bit):
        raise ValueError("train_sq_ivf reproduces faiss's training for 8-bit min-max residual codes only")
    n, dim = x.shape
    index.train_q1(n, faiss.swig_ptr(x), False, index.metric_type)
    rows = np.arange(n, dtype=np.int32)
    if n > index.train_encoder_num_vectors():  # faiss's fvecs_maybe_subsample (seed 1234)
        faiss.rand_perm(faiss.swig_ptr(rows), n, 1234)
        rows = rows[: index.train_encoder_num_vectors()]
    low, high = np.full(dim, np.inf, np.float32), np.full(dim, -np.inf, np.float32)
    for lo in range(0, len(rows), ADD_ROWS // 8):
        chunk = x[rows[lo : lo + ADD_ROWS // 8]]
        _, lists = index.quantizer.search(chunk, 1)
        residuals = chunk - index.quantizer.reconstruct_batch(lists.ravel())
        low, high = np.minimum(low, residuals.min(axis=0)), np.maximum(high, residuals.max(axis=0))
    faiss.copy_array_to_vector(np.concatenate([low, high - low]), index.sq.trained)
    index.is_trained = True
