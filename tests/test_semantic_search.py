"""Semantic dedup's search and encoders: the kept-record search against an exhaustive one, the
IVF index, the embeddings file, and the static model distilled offline from the bundled MiniLM."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from curation.dedup import encoders, search
from curation.dedup.semantic import EmbeddingFile, greedy_duplicates, greedy_kept, match_index


def planted(n: int, dim: int = 48, seed: int = 0) -> np.ndarray:
    """Unit vectors: n/4 random ones, the rest noisy copies of them (cosines spread ~0.8-0.99)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n // 4, dim))
    copies = base[rng.integers(0, len(base), n - len(base))] + rng.uniform(0.05, 0.6, (n - len(base), 1)) * rng.normal(
        size=(n - len(base), dim)
    ) / np.sqrt(dim) * 3
    vectors = np.concatenate([base, copies])[rng.permutation(n)]
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def stored(tmp_path: Path, vectors: np.ndarray, piece: int = 700) -> EmbeddingFile:
    store = EmbeddingFile(tmp_path / "e.f32")
    for lo in range(0, len(vectors), piece):  # appended in pieces, like partitions arriving
        store.append(vectors[lo : lo + piece])
    return store


def test_embeddings_file_reads_back_what_was_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.dedup import semantic

    monkeypatch.setattr(semantic, "READ_ROWS", 100)  # many increasing rows: read block by block
    vectors = planted(1000)
    store = stored(tmp_path, vectors, piece=333)
    np.testing.assert_array_equal(store.read(np.arange(1000)), vectors)
    np.testing.assert_array_equal(store.read(np.arange(5, 1000, 3)), vectors[5::3])
    np.testing.assert_array_equal(store.read(np.array([999, 3, 3, 500])), vectors[[999, 3, 3, 500]])  # mapped
    np.testing.assert_array_equal(np.concatenate(list(store.blocks(128))), vectors)


@pytest.mark.parametrize("threshold", [0.85, 0.95])
def test_exact_search_decides_what_the_exhaustive_walk_does(tmp_path: Path, threshold: float) -> None:
    vectors = planted(9000)  # over two blocks of BLOCK_ROWS: matches across blocks too
    kept_as, cosine, how = greedy_kept(stored(tmp_path, vectors), threshold)
    expected, expected_cosine = greedy_duplicates(vectors, threshold)
    assert how == "exact"
    np.testing.assert_array_equal(kept_as, expected)
    np.testing.assert_allclose(cosine, expected_cosine, atol=1e-5)
    assert 1000 < (kept_as != np.arange(len(vectors))).sum() < 8000  # the planted set has both


def test_ivf_index_finds_at_least_99_percent_of_the_exhaustive_removals(tmp_path: Path) -> None:
    vectors = planted(24_000)
    threshold = 0.85
    kept_as, cosine, how = greedy_kept(stored(tmp_path, vectors), threshold, exact_rows=500)
    expected, _ = greedy_duplicates(vectors, threshold)
    assert how.startswith("exact, then ivf from ")
    removed, truth = kept_as != np.arange(len(vectors)), expected != np.arange(len(vectors))
    assert (removed & truth).sum() >= 0.99 * truth.sum()
    assert (removed & ~truth).sum() <= 0.01 * truth.sum()  # a missed removal may remove another later
    # Every removal points at an earlier kept vector, with its exact cosine.
    dup = np.flatnonzero(removed)
    assert (kept_as[dup] < dup).all() and not removed[kept_as[dup]].any()
    exact = np.einsum("ij,ij->i", vectors[dup], vectors[kept_as[dup]])
    np.testing.assert_allclose(cosine[dup], exact, atol=1e-5)
    assert (cosine[dup] >= threshold).all()


def test_the_ivf_lists_are_rebuilt_as_the_kept_set_grows_and_still_find_near_copies() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(20_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = search.KeptIndex(lambda rows: vectors[rows], 32, threshold=0.9, exact_rows=1000)
    for lo in range(0, len(vectors), 1000):
        index.add(np.arange(lo, lo + 1000), vectors[lo : lo + 1000])
    assert index.kind == "ivf" and index.rebuilds == 2  # built at 2,000 kept, rebuilt at 8,000
    assert index._ivf.nlist == 8000 // search.ROWS_PER_LIST
    picked = rng.choice(len(vectors), 300, replace=False)
    near = vectors[picked] + 0.02 * rng.normal(size=(300, 32)).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    found, cosine = index.best_match(near)
    assert (found == picked).mean() >= 0.99
    np.testing.assert_allclose(cosine[found == picked], np.einsum("ij,ij->i", near, vectors[picked])[found == picked], atol=1e-5)


@pytest.mark.parametrize("n", [5_000, 110_000])  # faiss trains the codes on a subsample past 100,000
def test_the_lists_are_trained_as_faiss_trains_them(n: int) -> None:
    import faiss

    vectors = planted(n, dim=16, seed=5)

    def index():
        ivf = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(16), 16, 32, faiss.ScalarQuantizer.QT_8bit,
                                            faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed, ivf.nprobe = 0, 4
        return ivf

    theirs, ours = index(), index()
    theirs.train(vectors)
    search.train_sq_ivf(ours, vectors)
    assert ours.is_trained
    np.testing.assert_array_equal(faiss.vector_to_array(ours.sq.trained), faiss.vector_to_array(theirs.sq.trained))
    np.testing.assert_array_equal(ours.quantizer.reconstruct_n(0, 32), theirs.quantizer.reconstruct_n(0, 32))
    for ivf in (theirs, ours):
        ivf.add_with_ids(vectors[:3000], np.arange(3000))
    queries = planted(500, dim=16, seed=6)
    for a, b in zip(theirs.search(queries, 16), ours.search(queries, 16), strict=True):
        np.testing.assert_array_equal(a, b)


def test_published_lookup_finds_the_closest_match_exact_and_by_ivf(monkeypatch: pytest.MonkeyPatch) -> None:
    published = planted(6000, seed=1)
    new = np.concatenate([published[[10, 4000, 5999]], planted(40, seed=2)])
    new[:3] += 0.02 * np.random.default_rng(3).normal(size=(3, new.shape[1]))
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    sims = new @ published.T
    expected = np.where(sims.max(axis=1) >= 0.9, sims.argmax(axis=1), -1)
    exact, _ = match_index(new, published, 0.9)
    monkeypatch.setattr(search, "EXACT_ROWS", 1000)
    ivf, cosine = match_index(new, published, 0.9)
    np.testing.assert_array_equal(exact, expected)
    assert (ivf[:3] == expected[:3]).all() and (expected[:3] >= 0).all()
    assert (ivf == expected).mean() >= 0.97
    np.testing.assert_allclose(cosine[:3], sims[np.arange(3), expected[:3]], atol=1e-5)


# --- encoders -------------------------------------------------------------------------------


def test_static_model_is_distilled_offline_cached_and_rebuilt_when_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The static model setup distilled (or this test distils, on a machine without the cache,
    with the hub forbidden) is used from the cache as it is, and a damaged copy is rebuilt."""
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("the static model must come from the bundled files, not a hub")

    from schemas import bundled

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    distilled_here = bundled.minilm_static_dir()  # the repo cache (CURATE_CACHE_DIR unset)

    # A cache of its own holding a copy; distilling again would restore that copy, and is counted.
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path))
    model_dir = tmp_path / "models" / bundled.MINILM_STATIC_NAME
    shutil.copytree(distilled_here, model_dir)
    distilled: list[Path] = []

    def distil(target: Path) -> None:
        distilled.append(target)
        bundled._publish_folder(target, lambda folder: shutil.copytree(distilled_here, folder, dirs_exist_ok=True))

    monkeypatch.setattr(bundled, "_distil_minilm", distil)
    encoders.load_encoder.cache_clear()

    first = encoders.load_encoder(None, 128)
    vectors = first.encode(["The train was cancelled because of snow.", "Snow led to the train's cancellation.",
                            "Bake the bread for forty minutes."])
    assert vectors.shape == (3, 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert first.identity == "bundled:minilm-static-256-centred"

    # Cached: a new process (here: a cleared lru_cache) loads it without distilling again.
    mtime = (model_dir / "model.safetensors").stat().st_mtime_ns
    encoders.load_encoder.cache_clear()
    np.testing.assert_array_equal(encoders.load_encoder(None, 128).encode(["Bake the bread for forty minutes."]),
                                  vectors[2:])
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == mtime and distilled == []

    # Damaged: rebuilt, with a warning that says so and where, and no staging folder left.
    (model_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    encoders.load_encoder.cache_clear()
    with caplog.at_level(logging.WARNING):
        again = encoders.load_encoder(None, 128)
    assert any("does not load" in r.message and "rebuilding" in r.message and str(model_dir) in r.message
               for r in caplog.records)
    np.testing.assert_allclose(again.encode(["Bake the bread for forty minutes."]), vectors[2:], atol=1e-6)
    assert distilled == [model_dir]
    assert {p.name for p in model_dir.parent.iterdir()} == {model_dir.name}
    encoders.load_encoder.cache_clear()


def test_an_unknown_encoder_name_is_a_config_error(tmp_path: Path) -> None:
    from schemas.config import ConfigError

    with pytest.raises(ConfigError, match="dedup.semantic.model: .* is neither minilm-static nor all-MiniLM-L6-v2"):
        encoders.load_encoder(str(tmp_path / "missing"), 128)
