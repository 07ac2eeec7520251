"""Near-duplicate removal: MinHash signatures, LSH banding, exact Jaccard verification.

Shingles are the word n-grams (n = cfg.ngram) of the lowercased `\\w+` words of the view text; a
text of fewer than n words is one shingle, a text without words has none and is left alone.

1. Signatures, in batches of ~BATCH_BYTES of text so temporaries stay bounded (~60 bytes/word):
   polars extracts and hashes the words (u64); numpy folds n shifted word hashes into one u64
   hash per shingle (wrapping arithmetic, then the murmur3 finaliser); each permutation maps
   the top 32 bits x of a shingle hash to a*x + b mod 2^32 (a odd, so a bijection: datasketch
   2.0's default "affine32" scheme; u32 maths vectorises ~3x better than u64 multiply-shift),
   and np.minimum.reduceat takes the min per document. Only the bands x rows <= num_perm
   permutations that LSH reads are computed.
2. LSH: b bands of r rows from datasketch's optimiser for (threshold, num_perm). With verify on,
   false negatives weigh 0.99: verification removes false positives, but nothing recovers a
   missed pair (at threshold 0.8 and 128 permutations a pair right at the threshold becomes a
   candidate with p = 0.99 instead of 0.40 for equal weights).
3. Candidates: documents with equal band keys. Each is paired with the first document of its
   bucket and its BUCKET_WINDOW - 1 predecessors, so a bucket of m documents costs O(m) pairs.
4. Verification (cfg.verify): exact Jaccard of the candidates' sets of 64-bit shingle hashes
   (a collision needs ~2^32 shingles), keeping pairs >= threshold; unverified, all candidates.
5. Clusters: connected components of the kept pairs.

Kept rule: in every cluster the earliest record in input order (row position in the incoming
frame) is kept; the others are rejected as `near_duplicate` of it. The detail gives their exact
Jaccard with the kept record (below the threshold when they joined through a chain a~b~c), or
the MinHash estimate of it when verify is off.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import polars as pl
from datasketch.lsh import _optimal_param  # the routine behind MinHashLSH(threshold, weights)
from tqdm import tqdm

from curation.core.corpus import Source, take_parts
from curation.core.engine import Engine, LocalEngine
from curation.core.stage import Stage, StageResult
from curation.core.text import text_view
from curation.dedup.common import earliest_roots, split_duplicates
from curation.dedup.siblings import spare_siblings
from schemas.config import MinHashDedup
from schemas.figures import MinhashFigures

STAGE = "dedup_minhash"
BATCH_BYTES = 8 << 20
WORKERS = min(4, os.cpu_count() or 1)
CHUNK_SHINGLES = 1 << 17  # permutation temporaries that stay in cache: ~2x faster than big arrays
BUCKET_WINDOW = 8
VERIFY_SHINGLES = 4_000_000  # shingles probed per verification chunk
SEED = 0x5EED
FOLD = np.uint64(0x9E3779B97F4A7C15)  # odd: folding hashes with it loses no information


def build_minhash_stage(
    cfg: MinHashDedup, progress: bool = True, engine: Engine | None = None, keep_siblings: bool = False
) -> Stage:
    """`engine` computes the band keys by partitions (default: this process); only the keys
    (8 bytes a band per record; the signatures too when verify is off) come back for grouping.
    `keep_siblings`: preference sibling answers are never removed (curation.dedup.siblings)."""
    bands, rows = lsh_params(cfg.threshold, cfg.num_perm, cfg.verify)
    a, b = permutations(cfg.num_perm)
    perms = a[: bands * rows], b[: bands * rows]  # the optimiser may leave a few unused
    engine = engine or LocalEngine()

    def band_keys(records: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        texts = records.select(text_view(cfg.view)).to_series()
        docs, sigs = signatures(texts, cfg.ngram, perms, progress and engine.in_process)
        return docs, _band_keys(sigs, bands, rows), None if cfg.verify else sigs

    def run(records: pl.DataFrame) -> StageResult:
        # Filled partition by partition: the keys are held once, never as parts plus a copy.
        docs, keys = np.empty(records.height, np.int64), np.empty((bands, records.height), np.uint64)
        filled, sig_parts = 0, []
        parts = engine.imap_partitions(band_keys, records, STAGE)
        for (part_docs, part_keys, part_sigs), start in zip(parts, engine.starts(records), strict=True):
            docs[filled : filled + len(part_docs)] = part_docs + start
            keys[:, filled : filled + len(part_docs)] = part_keys
            filled += len(part_docs)
            sig_parts.append(part_sigs)
        docs, keys = docs[:filled], keys[:, :filled]
        sets = None
        if cfg.verify:  # the shingle sets of every document that shares a band key with another
            shared = np.zeros(len(docs), bool)
            for band in keys:
                shared[_bucketed(band)[1]] = True
            both = docs[shared]
            sets = ShingleSets.read(records, both, text_view(cfg.view), cfg.ngram)
        root, compared, confirmed = np.arange(records.height), 0, 0
        for groups in engine.imap(band_pairs, (keys[j] for j in range(bands)), bands, "band buckets"):
            for pair in groups:
                # Pairs already joined (through any earlier pair) cannot change a cluster.
                left = docs[(pair >> np.uint64(32)).astype(np.int64)]
                right = docs[(pair & np.uint64(0xFFFFFFFF)).astype(np.int64)]
                apart = root[left] != root[right]
                left, right = left[apart], right[apart]
                compared += len(left)
                if sets is not None:
                    keep = sets.jaccard(left, right) >= cfg.threshold
                    left, right = left[keep], right[keep]
                confirmed += len(left)
                if len(left):  # clusters merge through their earliest rows (each one's root)
                    root = earliest_roots(records.height, root[left], root[right])[root]
        del keys
        figures = MinhashFigures(bands=bands, rows=rows, candidate_pairs=compared)
        if cfg.verify:
            figures.confirmed_pairs = confirmed
        if keep_siblings:
            root, figures.siblings_protected = spare_siblings(records, root, engine)
        dup = np.flatnonzero(root != np.arange(records.height))
        if sets is not None:
            label, score = "jaccard {:.2f}", sets.jaccard(dup, root[dup])
        else:
            sigs = np.concatenate(sig_parts, axis=1)
            at_dup, at_root = np.searchsorted(docs, dup), np.searchsorted(docs, root[dup])
            label, score = "minhash estimate of jaccard {:.2f}", (sigs[:, at_dup] == sigs[:, at_root]).mean(0)
        detail = pl.Series([label.format(s) for s in score], dtype=pl.String)
        result = split_duplicates(records, STAGE, "near_duplicate", root, detail)
        result.figures = figures
        return result

    return Stage(STAGE, run, streams=True)


@lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int, verify: bool) -> tuple[int, int]:
    """(bands, rows) minimising datasketch's weighted false positive + false negative areas."""
    fp_weight = 0.01 if verify else 0.5
    return _optimal_param(threshold, num_perm, fp_weight, 1 - fp_weight)


def permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (a odd, b) per permutation, so signatures are reproducible across runs."""
    rng = np.random.default_rng(SEED)
    a = rng.integers(0, 1 << 32, num_perm, dtype=np.uint32) | np.uint32(1)
    return a, rng.integers(0, 1 << 32, num_perm, dtype=np.uint32)


def shingle_hashes(texts: pl.Series, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingles per text, and the u64 hashes of all shingles in text order."""
    words = texts.str.to_lowercase().str.extract_all(r"\w+")
    lens = words.list.len().to_numpy().astype(np.int64)
    h = words.explode(empty_as_null=False).hash(SEED).to_numpy()
    ends = np.cumsum(lens)
    starts = ends - lens
    short = (lens > 0) & (lens < ngram)
    g = h.copy()
    whole = np.zeros(len(lens), np.uint64)  # a short text's one shingle: all of its words
    keep = np.ones(len(h), bool)
    for k in range(1, ngram):
        # g[i] folds words i..i+k-1 here, so texts of exactly k words are complete.
        whole[lens == k] = g[starts[lens == k]]
        g[:-k] *= FOLD
        g[:-k] += h[k:]
        keep[ends[lens >= k] - k] = False  # no n-gram starts in a text's last n-1 words
    g[starts[short]] = whole[short]
    keep[starts[short]] = True
    return np.where(lens >= ngram, lens - ngram + 1, short), _fmix64(g[keep])


def signatures(
    texts: pl.Series, ngram: int, perms: tuple[np.ndarray, np.ndarray], progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the texts that have shingles, and their signatures (permutations x rows, u32)."""

    def batch(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = bounds
        counts, hashes = shingle_hashes(texts.slice(lo, hi - lo), ngram)
        return lo + np.flatnonzero(counts), _minhash(hashes, counts[counts > 0], perms)

    sizes = texts.str.len_bytes().fill_null(0).to_numpy()
    # At least one batch per worker: a corpus shard is often smaller than BATCH_BYTES.
    batches = _batches(sizes, min(BATCH_BYTES, int(sizes.sum()) // WORKERS + 1))
    docs, sigs = [np.empty(0, np.int64)], [np.empty((len(perms[0]), 0), np.uint32)]
    # polars and numpy release the GIL, so batches run in parallel on threads.
    with ThreadPoolExecutor(WORKERS) as pool:
        for rows, sig in tqdm(pool.map(batch, batches), total=len(batches), desc=STAGE, disable=not progress):
            docs.append(rows)
            sigs.append(sig)
    return np.concatenate(docs), np.concatenate(sigs, axis=1)


def _minhash(hashes: np.ndarray, counts: np.ndarray, perms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    a, b = perms
    x = (hashes >> np.uint64(32)).astype(np.uint32)
    offsets = np.r_[0, np.cumsum(counts)]
    out = np.empty((len(a), len(counts)), np.uint32)
    for lo, hi in _batches(counts, CHUNK_SHINGLES):
        chunk = x[offsets[lo] : offsets[hi]]
        starts = offsets[lo:hi] - offsets[lo]
        tmp = np.empty_like(chunk)
        for p in range(len(a)):
            np.multiply(chunk, a[p], out=tmp)
            np.add(tmp, b[p], out=tmp)
            np.minimum.reduceat(tmp, starts, out=out[p, lo:hi])
    return out


def band_pairs(band: np.ndarray) -> list[np.ndarray]:
    """One band's candidate pairs (i < j) packed as i << 32 | j, each group sorted and unique:
    first every document with the first of its bucket, then with its predecessor 1, 2, ...,
    BUCKET_WINDOW - 1 places before it. A bucket of m documents costs O(m) pairs, and once
    the first group has joined a bucket's near duplicates the later groups are skipped."""
    key, doc = _bucketed(band)
    starts = _run_starts(key)
    first = np.maximum.accumulate(np.where(starts, np.arange(len(key)), 0))
    groups = [_pack(doc[first[~starts]], doc[~starts])]
    for d in range(1, BUCKET_WINDOW):
        same = key[d:] == key[:-d]
        groups.append(_pack(doc[:-d][same], doc[d:][same]))
    return groups


def _bucketed(band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documents of one band that share its key with another: (key, document), sorted by
    key and, within a bucket, by document."""
    n = len(band)
    # One plain sort (10x faster than an argsort) groups the buckets: the document index takes
    # the low bits of the mixed band key, so documents also ascend within a bucket. Truncated
    # keys collide by chance for ~2^(3b - 65) pairs with b = log2(n) bits: none below ~10^6
    # documents, ~100 false candidates per band at 10^7 (verification drops them).
    low = np.uint64((1 << max(n - 1, 1).bit_length()) - 1)
    packed = np.sort(_fmix64(band.copy()) & ~low | np.arange(n, dtype=np.uint64))
    key, doc = packed & ~low, (packed & low).astype(np.int64)
    starts = _run_starts(key)
    alone = starts.copy()  # buckets of one document: most of them
    alone[:-1] &= starts[1:]
    return key[~alone], doc[~alone]


def _pack(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return _unique(left.astype(np.uint64) << np.uint64(32) | right.astype(np.uint64))


class ShingleSets:
    """The shingle sets of some rows, for exact Jaccard similarities between them."""

    def __init__(self, texts: pl.Series, rows: np.ndarray, ngram: int) -> None:
        """`texts`: the texts of `rows` (sorted row numbers), in that order."""
        self._build([_hashed(texts, ngram)], rows)

    @classmethod
    def read(cls, records: Source, rows: np.ndarray, expr: pl.Expr, ngram: int) -> ShingleSets:
        """The sets of `rows` (sorted) of a frame or corpus, read shard by shard: only the
        shingle hashes are held, never the texts."""
        sets = cls.__new__(cls)
        sets._build([_hashed(texts, ngram) for texts in take_parts(records, rows, expr)], rows)
        return sets

    def _build(self, parts: list[tuple[np.ndarray, np.ndarray]], rows: np.ndarray) -> None:
        counts = np.concatenate([np.empty(0, np.int64), *(c for c, _ in parts)])
        hashes = np.concatenate([np.empty(0, np.uint64), *(h for _, h in parts)])
        del parts
        # (set index << 32 | dense shingle id), sorted and unique: each set is a sorted segment.
        # Built in place and in chunks (np.unique's inverse would hold ~5 arrays of every shingle).
        distinct = _unique(hashes)
        keys = np.repeat(np.arange(len(rows), dtype=np.uint64), counts)
        for lo in range(0, len(keys), VERIFY_SHINGLES):
            chunk = slice(lo, lo + VERIFY_SHINGLES)
            keys[chunk] <<= np.uint64(32)
            keys[chunk] |= np.searchsorted(distinct, hashes[chunk]).astype(np.uint64)
        del hashes, distinct
        keys.sort()
        self.keys = keys[_run_starts(keys)]
        self.start = np.searchsorted(self.keys, np.arange(len(rows) + 1, dtype=np.uint64) << np.uint64(32))
        self.rows = rows  # sorted

    def jaccard(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        a, b = np.searchsorted(self.rows, left), np.searchsorted(self.rows, right)
        size_a, size_b = self.start[a + 1] - self.start[a], self.start[b + 1] - self.start[b]
        inter = np.zeros(len(a), np.int64)
        for lo, hi in _batches(size_a, VERIFY_SHINGLES):  # bounds the probe arrays
            # Probe every shingle of a's set in b's set.
            pair = np.repeat(np.arange(lo, hi), size_a[lo:hi])
            first = np.cumsum(size_a[lo:hi]) - size_a[lo:hi]
            element = np.arange(len(pair)) - np.repeat(first - self.start[a[lo:hi]], size_a[lo:hi])
            probe = b[pair].astype(np.uint64) << np.uint64(32) | self.keys[element] & np.uint64(0xFFFFFFFF)
            found = self.keys[np.minimum(np.searchsorted(self.keys, probe), len(self.keys) - 1)] == probe
            inter[lo:hi] = np.bincount(pair[found] - lo, minlength=hi - lo)
        union = size_a + size_b - inter
        return np.divide(inter, union, out=np.zeros(len(a)), where=union > 0)


def _hashed(texts: pl.Series, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """shingle_hashes in batches of ~BATCH_BYTES of text: the words' temporaries stay bounded."""
    sizes = texts.str.len_bytes().fill_null(0).to_numpy()
    parts = [shingle_hashes(texts.slice(lo, hi - lo), ngram) for lo, hi in _batches(sizes, BATCH_BYTES)]
    counts = np.concatenate([np.empty(0, np.int64), *(c for c, _ in parts)])
    return counts, np.concatenate([np.empty(0, np.uint64), *(h for _, h in parts)])


def _batches(weights: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive (lo, hi) index ranges whose weights sum to about `budget` each."""
    ends = np.cumsum(weights, dtype=np.int64)
    cuts = np.searchsorted(ends, np.arange(budget, ends[-1] if len(ends) else 0, budget))
    bounds = np.unique(np.r_[0, cuts, len(weights)])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def _unique(x: np.ndarray) -> np.ndarray:
    """Sorted unique values (numpy 2.4's np.unique hashes u64 ~50x slower than this sort)."""
    x = np.sort(x)
    return x[_run_starts(x)]


def _run_starts(x: np.ndarray) -> np.ndarray:
    """Where a run of equal values starts."""
    starts = np.ones(len(x), bool)
    starts[1:] = x[1:] != x[:-1]
    return starts


def _fmix64(x: np.ndarray) -> np.ndarray:
    """The murmur3 64-bit finaliser, in place: spreads every input bit over the output."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


# --- published index (incremental refresh): stored signatures, new records looked up --------

PUBLISHED_BUCKET_CAP = 64  # published documents paired with a new one per shared band key


def index_settings(cfg: MinHashDedup) -> dict:
    """What produced stored signatures. Words are hashed with polars' hash, which polars does not
    promise to keep across versions, so its version is part of the settings."""
    return {"view": cfg.view, "ngram": cfg.ngram, "num_perm": cfg.num_perm, "seed": SEED, "polars": pl.__version__}


def index_signatures(texts: pl.Series, cfg: MinHashDedup, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the texts that have shingles, and their signatures under all cfg.num_perm
    permutations (num_perm x rows, u32): stored whole, so LSH settings can change freely."""
    return signatures(texts, cfg.ngram, permutations(cfg.num_perm), progress)


def _band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[bands, n] u64: each band's `rows` signature values folded into one key, salted by the
    band number."""
    keys = np.empty((bands, sigs.shape[1]), np.uint64)
    for j in range(bands):
        key = np.full(sigs.shape[1], j, np.uint64)
        for row in sigs[j * rows : (j + 1) * rows]:
            key = key * FOLD + row
        keys[j] = key
    return keys


def match_index(
    texts: pl.Series,
    docs: np.ndarray,
    sigs: np.ndarray,
    index_texts: pl.Series,
    index_docs: np.ndarray,
    index_sigs: np.ndarray,
    cfg: MinHashDedup,
) -> tuple[np.ndarray, np.ndarray]:
    """New documents against published ones: for each new text, the position (in index_docs) of
    the earliest published document it near-duplicates, or -1, and the Jaccard (or, verify off,
    the MinHash estimate of it).

    `docs`/`sigs` as from `index_signatures(texts)`; `index_docs` are rows of `index_texts` (the
    published records' view texts) with signatures `index_sigs`. Candidates share a band key
    (at most PUBLISHED_BUCKET_CAP published documents per key), then are verified as the stage
    verifies its pairs.
    """
    match, score = np.full(len(texts), -1, np.int64), np.zeros(len(texts))
    if not len(docs) or not len(index_docs):
        return match, score
    bands, rows = lsh_params(cfg.threshold, cfg.num_perm, cfg.verify)
    new_keys, old_keys = _band_keys(sigs, bands, rows), _band_keys(index_sigs, bands, rows)
    left, right = [], []
    for j in range(bands):
        order = np.argsort(old_keys[j], kind="stable")
        sorted_keys = old_keys[j][order]
        lo = np.searchsorted(sorted_keys, new_keys[j], "left")
        count = np.minimum(np.searchsorted(sorted_keys, new_keys[j], "right") - lo, PUBLISHED_BUCKET_CAP)
        new = np.repeat(np.arange(len(docs)), count)
        offset = np.arange(len(new)) - np.repeat(np.cumsum(count) - count, count)
        left.append(new)
        right.append(order[np.repeat(lo, count) + offset])
    pair = _unique(np.concatenate(left).astype(np.uint64) << np.uint64(32) | np.concatenate(right).astype(np.uint64))
    new, old = (pair >> np.uint64(32)).astype(np.int64), (pair & np.uint64(0xFFFFFFFF)).astype(np.int64)
    if cfg.verify:
        # One text series for both sides: published rows first, then the new ones.
        both = pl.concat([index_texts.gather(index_docs[np.unique(old)]), texts.gather(docs[np.unique(new)])])
        left_rows = np.searchsorted(np.unique(old), old)
        right_rows = len(np.unique(old)) + np.searchsorted(np.unique(new), new)
        sets = ShingleSets(both, np.arange(len(both)), cfg.ngram)
        sim = sets.jaccard(right_rows, left_rows)
        ok = sim >= cfg.threshold
    else:
        sim = (sigs[:, new] == index_sigs[:, old]).mean(0)
        ok = np.ones(len(new), bool)
    new, old, sim = new[ok], old[ok], sim[ok]
    first = _run_starts(new)  # pairs are sorted by (new, old): the earliest published match
    match[docs[new[first]]], score[docs[new[first]]] = old[first], sim[first]
    return match, score
