"""A real-text benchmark corpus with planted duplicates and their ground truth.

`build_corpus(n)` cuts the raw texts under /work/shared/data/raw (PEPs, Gutenberg, State of the
Union, C4 and Wikipedia samples) into ~n base documents of `min_words`..`max_words` words, then
plants copies of random base documents at random positions:

- "exact": the same text with surface noise only (ASCII case, whitespace, punctuation next to a
  space), so it is equal to its source after case/whitespace/punctuation normalisation;
- "near": a copy with a few word substitutions, insertions and deletions (1 up to `edit_rate`
  of its words), so its shingle Jaccard with the source spreads from ~0.4 to ~1.

Base documents: pass 0 tiles every file with paragraph-aligned windows of log-uniform length
(more short documents, like real fine-tuning data). The raw texts hold ~3.6M words, so larger
corpora add passes of unaligned windows at random phases; a window is only accepted if its word
Jaccard with every accepted window of the same file is at most 1/3 (shingle Jaccard is lower),
and base documents equal up to case and whitespace are dropped, so the only duplicates besides the
planted ones are natural near-repeats inside the sources (boilerplate, refrains). `score_edges`
counts those as correct when a caller-supplied check confirms them.

Nothing is written to disk: every call rebuilds the corpus from the seed.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

RAW_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw"  # ../shared beside the repo
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    # One row per planted copy: a < b are indices into `texts`, kind is "exact" or "near",
    # jaccard is the true Jaccard of their word `ngram`-shingle sets.
    pairs: pl.DataFrame
    ngram: int

    def truth(self, threshold: float) -> pl.DataFrame:
        """The planted pairs a dedup at `threshold` should find (true Jaccard >= threshold)."""
        return self.pairs.filter(pl.col("jaccard") >= threshold)


def shingles(text: str, ngram: int) -> set[str]:
    """Lowercased word n-grams; a text shorter than n words is one shingle (as dedup_minhash)."""
    words = WORD.findall(text.lower())
    if len(words) < ngram:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def to_records(texts: list[str], prefix: str = "doc") -> pl.DataFrame:
    """Raw records in RECORD_SCHEMA, ids `<prefix>-<index>`, for feeding stages."""
    from schemas.record import RECORD_SCHEMA

    n = len(texts)
    return pl.DataFrame(
        {
            "id": [f"{prefix}-{i}" for i in range(n)],
            "source": [f"bench#{i}" for i in range(n)],
            "kind": ["raw"] * n,
            "text": texts,
            "messages": [None] * n,
            "chosen": [None] * n,
            "rejected": [None] * n,
            "meta": ["{}"] * n,
        },
        schema=RECORD_SCHEMA,
    )


def build_corpus(
    n_docs: int,
    seed: int = 0,
    near_dup_frac: float = 0.05,
    exact_dup_frac: float = 0.02,
    ngram: int = 5,
    min_words: int = 30,
    max_words: int = 300,
    edit_rate: float = 0.05,
    raw_dir: Path = RAW_DIR,
) -> Corpus:
    """~n_docs documents: base documents plus planted exact and near copies (fractions of n)."""
    rng = np.random.default_rng(seed)
    n_exact, n_near = round(n_docs * exact_dup_frac), round(n_docs * near_dup_frac)
    base = _base_documents(_load_streams(raw_dir), n_docs - n_exact - n_near, rng, min_words, max_words)
    vocab = sorted({w.lower() for text in base[:2000] for w in WORD.findall(text)})
    copies = [(int(i), "exact", _surface_noise(base[i], rng)) for i in rng.integers(0, len(base), n_exact)]
    copies += [(int(i), "near", _edit(base[i], rng, vocab, edit_rate)) for i in rng.integers(0, len(base), n_near)]
    # Interleave copies at random positions; a copy may land before its source.
    order = rng.permutation(len(base) + len(copies))
    texts = [""] * len(order)
    for pos, text in zip(order[: len(base)], base, strict=True):
        texts[pos] = text
    rows = []
    for pos, (src, kind, text) in zip(order[len(base) :], copies, strict=True):
        texts[pos] = text
        a, b = sorted((int(order[src]), int(pos)))
        similarity = jaccard(shingles(texts[a], ngram), shingles(texts[b], ngram))
        rows.append({"a": a, "b": b, "kind": kind, "jaccard": similarity})
    schema = {"a": pl.Int64, "b": pl.Int64, "kind": pl.String, "jaccard": pl.Float64}
    pairs = pl.DataFrame(rows, schema=schema)
    return Corpus(texts=texts, pairs=pairs.sort("a", "b"), ngram=ngram)


def score_edges(
    edges: Iterable[tuple[int, int]],
    truth: pl.DataFrame,
    confirm: Callable[[int, int], bool] | None = None,
) -> dict[str, float]:
    """Precision/recall/F1 of predicted (removed, kept) index edges against truth pairs (a, b).

    Recall: share of truth pairs whose two documents end up in one predicted cluster.
    Precision: share of edges joining two documents of one truth cluster, or confirmed by
    `confirm(i, j)` (e.g. true Jaccard >= threshold: an unplanted but real duplicate).
    """
    edges = list(edges)
    root = _components(edges)
    truth_root = _components(zip(truth["a"].to_list(), truth["b"].to_list(), strict=True))
    found = sum(root.get(a, a) == root.get(b, b) for a, b in zip(truth["a"], truth["b"], strict=True))
    good = sum(
        (i in truth_root and truth_root[i] == truth_root.get(j)) or (confirm is not None and confirm(i, j))
        for i, j in edges
    )
    precision = good / len(edges) if edges else 1.0
    recall = found / truth.height if truth.height else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "edges": len(edges), "truth": truth.height}


def _components(pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    return {x: find(x) for x in list(parent)}


# --- base documents -------------------------------------------------------------------------

@dataclass(frozen=True)
class Stream:
    """A file as words: `text` joins them with a space, or a blank line where a paragraph starts;
    word i is text[begin[i]:end[i]], and `breaks` lists the words that start paragraphs."""

    text: str
    begin: list[int]
    end: list[int]
    breaks: list[int]


def _load_streams(raw_dir: Path) -> list[Stream]:
    texts: list[str] = []
    for pattern in ("peps/*.rst", "gutenberg/*.txt", "state_union/*.txt", "wiki_demo.txt"):
        texts += [_read(p) for p in sorted(raw_dir.glob(pattern))]
    c4 = raw_dir / "c4_demo.jsonl"
    if c4.is_file():
        texts += [json.loads(line)["text"] for line in _read(c4).splitlines() if line.strip()]
    if not texts:
        raise FileNotFoundError(f"no raw text under {raw_dir}")
    streams = []
    for text in texts:
        paragraphs = [p.split() for p in re.split(r"\n\s*\n", text) if p.strip()]
        breaks = np.cumsum([0] + [len(words) for words in paragraphs[:-1]], dtype=np.int64)
        lengths = np.array([len(w) for words in paragraphs for w in words], dtype=np.int64)
        gaps = np.ones(len(lengths), np.int64)  # the separator before each word: " " or "\n\n"
        gaps[breaks] = 2
        gaps[0] = 0
        begin = np.cumsum(gaps + np.r_[0, lengths[:-1]])
        joined = "\n\n".join(" ".join(words) for words in paragraphs)
        streams.append(Stream(joined, begin.tolist(), (begin + lengths).tolist(), breaks.tolist()))
    return streams


def _read(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _base_documents(
    streams: list[Stream], n: int, rng: np.random.Generator, min_words: int, max_words: int
) -> list[str]:
    accepted: list[list[tuple[int, int]]] = [[] for _ in streams]  # per file, sorted spans
    seen: set[str] = set()
    docs: list[str] = []
    for phase in range(64):
        for f in rng.permutation(len(streams)):
            stream = streams[f]
            for s, e in _tile(stream, phase, rng, min_words, max_words):
                if _overlaps(accepted[f], s, e, max_words):
                    continue
                text = stream.text[stream.begin[s] : stream.end[e - 1]]
                key = " ".join(text.lower().split())
                if key in seen:
                    continue
                seen.add(key)
                bisect.insort(accepted[f], (s, e))
                docs.append(text)
                if len(docs) == n:
                    return [docs[i] for i in rng.permutation(n)]
    raise ValueError(f"the raw texts yield only {len(docs)} distinct base documents, {n} asked")


def _tile(
    stream: Stream, phase: int, rng: np.random.Generator, min_words: int, max_words: int
) -> Iterator[tuple[int, int]]:
    """Windows covering a stream: in phase 0 their ends snap to the paragraph start nearest the
    drawn length (paragraph-aligned documents), later phases start at a random offset."""
    n_words = len(stream.begin)
    lengths = np.exp(rng.uniform(np.log(min_words), np.log(max_words + 1), n_words // min_words + 1))
    s = 0 if phase == 0 else int(rng.integers(0, max_words))
    for length in lengths.astype(int).tolist():
        if s + min_words > n_words:
            break
        e = min(s + length, n_words)
        if phase == 0:
            lo = bisect.bisect_left(stream.breaks, s + min_words)
            hi = bisect.bisect_right(stream.breaks, s + max_words)
            if hi > lo:
                e = min(stream.breaks[lo:hi], key=lambda b: abs(b - e))
        yield s, e
        s = e


def _overlaps(spans: list[tuple[int, int]], s: int, e: int, max_len: int) -> bool:
    """Whether [s, e) has a word Jaccard above 1/3 with an accepted span."""
    for i in range(bisect.bisect_left(spans, (s - max_len, 0)), len(spans)):
        s2, e2 = spans[i]
        if s2 >= e:
            return False
        if 4 * (min(e, e2) - max(s, s2)) > (e - s) + (e2 - s2):
            return True
    return False


# --- planted copies -------------------------------------------------------------------------


def _surface_noise(text: str, rng: np.random.Generator) -> str:
    """Equal to `text` after lowercasing, dropping punctuation and collapsing whitespace."""
    words = text.split(" ")
    for i in rng.choice(len(words), size=max(1, len(words) // 10), replace=False):
        w = words[i]
        op = int(rng.integers(0, 4))
        if op == 0 and w.isascii():
            words[i] = w.upper()
        elif op == 1:
            words[i] = w + str(rng.choice([",", ";", "!", "?"]))
        elif op == 2 and len(w) > 1 and w[-1] in ",.;:!?" and w[-2].isalnum():
            words[i] = w[:-1]
        else:
            words[i] = w + str(rng.choice(["  ", "\n", "\t"]))
    return "  " + " ".join(words) + "\n"


def _edit(text: str, rng: np.random.Generator, vocab: list[str], edit_rate: float) -> str:
    """A few word substitutions, insertions and deletions (1 up to edit_rate of the words).

    Edits only hit tokens with word characters (not "--" or "*"), so the words change."""
    words = text.split(" ")
    for _ in range(int(rng.integers(1, max(2, round(edit_rate * len(words))) + 1))):
        wordy = [i for i, w in enumerate(words) if WORD.search(w)]
        i = wordy[int(rng.integers(0, len(wordy)))]
        op = int(rng.integers(0, 3)) if len(wordy) > 1 else 1
        if op == 0:
            words[i] = vocab[int(rng.integers(0, len(vocab)))]
        elif op == 1:
            words.insert(i, vocab[int(rng.integers(0, len(vocab)))])
        else:
            del words[i]
    return " ".join(words)
