"""Out-of-core runs: ingest writes the corpus as parquet shards and the streaming stages read
it shard by shard. Whatever the shard size, a run keeps and rejects exactly what the in-memory
run does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from curation.core.corpus import Corpus, CorpusWriter, append, take, write_parquet
from curation.core.inputs import load_config
from curation.core.run import run_pipeline
from curation.ingest import ingest
from schemas.config import InputSpec
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA
from tests.test_ray_engine import base_config, with_near_duplicates

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def numbers(tmp_path: Path, n: int, batch_size: int) -> Corpus:
    writer = CorpusWriter(tmp_path / "numbers", batch_size, tmp_path / "scratch", {"x": pl.Int64})
    for lo in range(0, n, 3):  # appended in pieces that do not line up with the shards
        writer.write(pl.DataFrame({"x": list(range(lo, min(lo + 3, n)))}))
    return writer.close()


def test_a_corpus_is_shards_of_at_most_batch_size_rows_in_order(tmp_path: Path) -> None:
    corpus = numbers(tmp_path, 23, 10)
    assert corpus.heights == (9, 9, 5)  # pieces of 3 rows: a shard is written before it would overflow
    assert corpus.starts == [0, 9, 18]
    few = CorpusWriter(tmp_path / "few", 1000, tmp_path, {"x": pl.Int64})
    for x in range(10):  # small pieces: a shard every MAX_PIECES frames, not every 1000 rows
        few.write(pl.DataFrame({"x": [x]}))
    assert few.close().heights == (4, 4, 2)
    assert CorpusWriter(tmp_path / "big", 10, tmp_path).close().height == 0
    big = CorpusWriter(tmp_path / "big", 10, tmp_path, {"x": pl.Int64})
    big.write(pl.DataFrame({"x": list(range(25))}))  # a frame larger than a shard is cut
    assert big.close().heights == (10, 10, 5)
    assert corpus.column("x").to_list() == list(range(23))
    assert take(corpus, np.array([1, 12, 22]), "x").to_list() == [1, 12, 22]
    reopened = Corpus.open(corpus.dir, 10, corpus.scratch)
    assert reopened.heights == corpus.heights
    longer = append(corpus, pl.DataFrame({"x": [100, 101]}))
    assert isinstance(longer, Corpus) and longer.dir.parent == tmp_path / "scratch"
    assert longer.column("x").to_list() == [*range(23), 100, 101]
    write_parquet([corpus, longer], tmp_path / "all.parquet", {"x": pl.Int64})
    assert pl.read_parquet(tmp_path / "all.parquet").height == 48


def test_an_empty_corpus_has_one_empty_shard_with_its_schema(tmp_path: Path) -> None:
    corpus = CorpusWriter(tmp_path / "empty", 10, tmp_path, REJECT_SCHEMA).close()
    assert corpus.height == 0 and len(corpus.files) == 1
    assert corpus.columns == list(REJECT_SCHEMA)


def bad_rows(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    good = [json.dumps({"instruction": f"Say {i}.", "output": f"{i}"}) for i in range(30)]
    lines = good[:10] + ["{not json", '{"instruction": 3}', "[1, 2]"] + good[10:] + ['{"instruction": "x", "output": ""}']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_streamed_ingest_writes_what_the_in_memory_ingest_returns(tmp_path: Path) -> None:
    specs = [
        InputSpec(path=str(DATA / "raw" / "c4_demo.jsonl")),
        InputSpec(path=str(bad_rows(tmp_path))),
        InputSpec(path=str(DATA / "sft" / "oasst_en_100_tree.jsonl")),
    ]
    whole = ingest(specs, progress=False)
    streamed = ingest(specs, progress=False, out=tmp_path / "run", batch_size=37)
    assert isinstance(streamed.records, Corpus) and isinstance(streamed.rejected, Corpus)
    assert max(streamed.records.heights) == 37 and len(streamed.records.files) > 3
    assert streamed.records.collect().equals(whole.records)  # type: ignore[union-attr]
    assert streamed.rejected.collect().equals(whole.rejected)  # type: ignore[union-attr]
    assert streamed.rejected.height >= 3 and streamed.rows_read == whole.rows_read
    assert streamed.stats().model_copy(update={"seconds": 0}) == whole.stats().model_copy(update={"seconds": 0})


def test_a_parquet_input_is_read_in_batches_with_row_positions(tmp_path: Path, monkeypatch) -> None:
    import curation.ingest.readers as readers_module

    monkeypatch.setattr(readers_module, "PARQUET_BATCH", 7)  # several batches from one file
    path = tmp_path / "alpaca.parquet"
    pl.DataFrame({"instruction": [f"Count to {i}." for i in range(20)], "output": ["1 2"] * 20}).write_parquet(path)
    loaded = readers_module._load_parquet(path, readers_module.TextDecoding())
    assert [frame.height for _, frame in loaded] == [7, 7, 6]  # the patch took
    result = ingest([InputSpec(path=str(path))], progress=False, out=tmp_path / "run", batch_size=8)
    sources = result.records.column("source").to_list()  # type: ignore[union-attr]
    assert result.records.height == 20
    assert sources == [f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}#{i}" for i in range(20)]


def curate(tmp_path: Path, name: str, batch_size: int | None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """A run through the pipeline; batch_size None = in memory, else streamed over shards.

    The Ray tests' data and settings, without semantic dedup: the Ray runs stream it already."""
    config = base_config()
    del config["dedup"]["semantic"]
    config["inputs"].append({"path": str(with_near_duplicates(tmp_path))})
    if batch_size is not None:
        config["execution"] = {"batch_size": batch_size}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / name
    run_pipeline(load_config(path), out, path, in_memory=batch_size is None)
    if batch_size is not None:  # every stage's output went to disk in shards of batch_size rows
        checkpoints = sorted((out / ".checkpoints").glob("[0-9]*-*/records"))
        assert len(checkpoints) == 4  # ingest, filters, exact, MinHash
        assert all(max(Corpus.open(c, batch_size, out / "scratch").heights) <= batch_size for c in checkpoints)
    stats = json.loads((out / "stats.json").read_text())
    return pl.read_parquet(out / "kept.parquet"), pl.read_parquet(out / "rejected.parquet"), stats


@pytest.mark.slow
def test_a_streamed_run_keeps_and_rejects_what_the_in_memory_run_does(tmp_path: Path) -> None:
    kept, rejected, stats = curate(tmp_path, "memory", None)
    s_kept, s_rejected, s_stats = curate(tmp_path, "streamed", 61)
    removed = {s["stage"]: s["removed_by_reason"] for s in stats["stages"]}
    assert all(removed[s] for s in ("filters", "dedup_exact", "dedup_minhash")), removed
    assert s_kept.equals(kept)
    columns = ["id", "stage", "reason", "detail", "duplicate_of"]
    assert s_rejected.select(columns).equals(rejected.select(columns))
    assert s_stats["totals"] == stats["totals"] and s_stats["invariant"]["holds"]
    assert kept.columns == list(RECORD_SCHEMA)


def test_a_streamed_jury_with_distillation_decides_what_the_in_memory_jury_does(tmp_path: Path, openai_server) -> None:
    from tests.openai_server import Reply, rating_reply

    def quality(body: dict) -> int:
        text = body["messages"][-1]["content"]
        return int(text.rsplit("quality=", 1)[1][0]) if "quality=" in text else 3

    # Every 9th answer is unreadable to the judge: its score stays empty and its raw answer is kept.
    openai_server.handler = lambda body: (
        Reply(text="cannot say") if "item 9" in body["messages"][-1]["content"] else rating_reply(body, quality(body))
    )
    rows = [
        {"instruction": f"Tell me about item {i}.",
         "output": ("A careful, correct and complete explanation with examples. " if i % 2 else "no idea lol ")
         + f"quality={5 if i % 2 else 1} item {i}"}
        for i in range(70)
    ]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = {"endpoint": {"base_url": openai_server.base_url, "model": "judge", "max_retries": 0, "timeout": 5}}
    config = {
        "inputs": [{"path": str(data)}],
        "jury": {"judges": [{"name": "a", "rubric": "geval_plain", "model": judge, "reasks": 0}], "min_score": 3,
                 "distill": {"sample": 40, "holdout": 0.25}, "cache_dir": str(tmp_path / "cache")},
    }
    results = {}
    for name, batch_size in (("memory", None), ("streamed", 9)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**config, "execution": {"batch_size": batch_size or 10_000}}))
        out = tmp_path / name
        run_pipeline(load_config(path), out, path, in_memory=batch_size is None)
        stats = json.loads((out / "stats.json").read_text())
        jury = next(s for s in stats["stages"] if s["stage"] == "jury")
        results[name] = (
            pl.read_parquet(out / "kept.parquet"),
            pl.read_parquet(out / "rejected.parquet").select("id", "reason", "detail"),
            pl.read_parquet(out / "jury" / "ratings.parquet"),
            {k: v for k, v in jury.items() if k not in ("seconds", "usage")},
        )
    (kept, rejected, ratings, jury), streamed = results["memory"], results["streamed"]
    assert jury["distill"]["sample"] == 40 and jury["rated"] == 70 and rejected.height > 20
    assert ratings.height == 40 and ratings["score"].null_count() >= 1  # a failed rating is stored
    assert kept.equals(streamed[0]) and rejected.equals(streamed[1]) and ratings.equals(streamed[2])
    # The distillation figures agree to float noise: the sample is embedded in other batches.
    streamed_distill, distill = streamed[3].pop("distill"), jury.pop("distill")
    assert streamed_distill.pop("warning", None) == distill.pop("warning", None)  # a small hold-out: said alike
    assert streamed_distill == pytest.approx(distill, rel=1e-4)
    assert jury == streamed[3]
