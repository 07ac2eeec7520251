"""engine: ray runs the filters and dedup stages as tasks on a real Ray cluster (a head and a
worker node on 127.0.0.1) and keeps and rejects exactly what engine: local does."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.core.inputs import load_config
from curation.core.plan import build_plan
from curation.core.run import run_pipeline
from schemas.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"

pytestmark = pytest.mark.slow


def curate(tmp_path: Path, config: dict, name: str) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """The local runs hold the corpus in memory; the Ray runs stream it from parquet shards of
    execution.batch_size rows (one Ray task each), as `curate run` does."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_config(path)
    run_pipeline(cfg, tmp_path / name, path, in_memory=cfg.execution.engine == "local")
    stats = json.loads((tmp_path / name / "stats.json").read_text())
    kept = pl.read_parquet(tmp_path / name / "kept.parquet")
    rejected = pl.read_parquet(tmp_path / name / "rejected.parquet")
    return kept, rejected, stats


def base_config() -> dict:
    return {
        "inputs": [
            {"path": str(DATA / "raw" / "c4_demo.jsonl")},
            {"path": str(DATA / "sft" / "oasst_en_100_tree.jsonl")},
        ],
        "filters": {
            "length": {"min_words": 3, "max_words": 4000},
            "keywords": {"refusals": True},
            "format": {"json": True, "code": True},
            "repetition": {"max_dup_line_frac": 0.3},
        },
        "dedup": {
            "exact": {},
            "minhash": {"threshold": 0.7, "num_perm": 64, "ngram": 3},
            "semantic": {"threshold": 0.9, "view": "assistant", "max_seq_length": 32},
        },
    }


def with_near_duplicates(tmp_path: Path) -> Path:
    """c4 documents copied with a changed case or a changed last word: exact and near duplicates."""
    rows = pl.read_ndjson(DATA / "raw" / "c4_demo.jsonl").head(120)
    texts = rows["text"].to_list()
    copies = [t.upper() for t in texts[:40]] + [t.rsplit(" ", 1)[0] + " zebra" for t in texts[40:120]]
    path = tmp_path / "copies.jsonl"
    pl.DataFrame({"text": copies}).write_ndjson(path)
    return path


def test_ray_engine_keeps_and_rejects_what_the_local_engine_does(tmp_path: Path, ray_cluster: str) -> None:
    config = base_config()
    config["inputs"].append({"path": str(with_near_duplicates(tmp_path))})
    config["preference"] = {"ranking": "human"}  # oasst siblings: protected from dedup, per shard on Ray
    kept_local, rejected_local, stats_local = curate(tmp_path, config, "local")
    # Small partitions: every stage's work is spread over many tasks on both nodes.
    config["execution"] = {"engine": "ray", "address": ray_cluster, "batch_size": 150}
    kept_ray, rejected_ray, stats_ray = curate(tmp_path, config, "ray")

    reasons = {s["stage"]: s["removed_by_reason"] for s in stats_local["stages"]}
    assert reasons["dedup_exact"].get("exact_duplicate", 0) >= 40
    assert reasons["dedup_minhash"].get("near_duplicate", 0) >= 40
    assert sum(reasons["filters"].values()) > 0
    assert kept_ray["id"].to_list() == kept_local["id"].to_list()
    columns = ["id", "source", "stage", "reason", "detail", "duplicate_of"]
    assert rejected_ray.select(columns).equals(rejected_local.select(columns))
    assert [s["removed_by_reason"] for s in stats_ray["stages"]] == [s["removed_by_reason"] for s in stats_local["stages"]]
    protected = [s.get("siblings_protected") for s in stats_local["stages"] if s["stage"].startswith("dedup")]
    ray_protected = [s.get("siblings_protected") for s in stats_ray["stages"] if s["stage"].startswith("dedup")]
    assert protected[2] > 0 and protected == ray_protected

    import ray

    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2  # the work ran on a two-node cluster


def test_ray_engine_without_verification_reports_the_same_estimates(tmp_path: Path, ray_cluster: str) -> None:
    config = {
        "inputs": [{"path": str(with_near_duplicates(tmp_path))}, {"path": str(DATA / "raw" / "c4_demo.jsonl")}],
        "dedup": {"minhash": {"threshold": 0.7, "num_perm": 64, "ngram": 3, "verify": False}},
    }
    _, rejected_local, _ = curate(tmp_path, config, "local")
    config["execution"] = {"engine": "ray", "address": ray_cluster, "batch_size": 64}
    _, rejected_ray, _ = curate(tmp_path, config, "ray")
    assert rejected_local.height >= 100
    assert rejected_ray.select("id", "detail", "duplicate_of").equals(rejected_local.select("id", "detail", "duplicate_of"))


def test_an_unreachable_cluster_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    import ray

    ray.shutdown()  # a fresh connection attempt, not the session cluster's
    config = {
        "inputs": [{"path": str(DATA / "raw" / "c4_demo.jsonl")}],
        "filters": {"length": {"min_words": 3}},
        "execution": {"engine": "ray", "address": "127.0.0.1:9"},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"execution.address: cannot reach Ray at '127.0.0.1:9'"):
        build_plan(load_config(path), tmp_path / "run", progress=False)


def test_local_judges_rate_in_ray_workers_with_the_local_engines_scores(tmp_path: Path, ray_cluster: str, monkeypatch) -> None:
    import orjson

    import curation.jury.stage as jury_stage
    import curation.llm.local as local_llm

    monkeypatch.setattr(jury_stage, "RAY_BATCH", 2)  # two tasks for four answers
    rows = [
        {"instruction": "What is the capital of France?", "output": answer}
        for answer in ("Paris.", "The capital of France is Paris.", "Bananas are yellow.", "I don't know.")
    ]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(orjson.dumps(r).decode() + "\n" for r in rows))
    results = {}

    def refuse(*args, **kwargs):
        raise AssertionError("a local judge rated in the driver")

    for engine in ("ray", "local"):
        config = {
            "inputs": [{"path": str(data)}],
            "jury": {"judges": [{"name": "helpful", "rubric": "helpfulness"}], "max_chars": 400,
                     "cache_dir": str(tmp_path / f"cache-{engine}")},
            "execution": {"engine": engine, "address": ray_cluster if engine == "ray" else None, "batch_size": 4},
        }
        with monkeypatch.context() as patch:
            if engine == "ray":  # every rating must run in a Ray worker, none in this process
                patch.setattr(local_llm.LocalModel, "complete", refuse)
            kept, _, stats = curate(tmp_path, config, engine)
        jury = next(s for s in stats["stages"] if s["stage"] == "jury")
        results[engine] = ([orjson.loads(m)["jury"] for m in kept["meta"]], jury)
    (ray_meta, ray_stats), (local_meta, local_stats) = results["ray"], results["local"]
    assert [m["method"] for m in ray_meta] == ["jury"] * 4
    assert [m["score"] for m in ray_meta] == pytest.approx([m["score"] for m in local_meta], abs=1e-3)
    assert ray_stats["usage"]["helpful"]["requests"] == local_stats["usage"]["helpful"]["requests"] == 4


def test_ray_workers_read_the_inputs_from_the_bucket_and_the_driver_reads_none(
    tmp_path: Path, ray_cluster: str, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest on Ray: each input file is read by a task from S3 (a gzip copy of oasst under
    another key repeats its ids: the driver makes them unique run-wide as the local ingest does),
    and every GET the driver makes is counted at s3fs's one S3 call."""
    import gzip

    from s3fs import S3FileSystem

    from curation.core.storage import RemotePath

    oasst = (DATA / "sft" / "oasst_en_100_tree.jsonl").read_bytes()
    files = {
        "raw/c4_demo.jsonl": (DATA / "raw" / "c4_demo.jsonl").read_bytes(),
        "sft/oasst.jsonl": oasst,
        "copies.jsonl": with_near_duplicates(tmp_path).read_bytes(),
        "again/oasst.jsonl.gz": gzip.compress(oasst),
    }
    for key, data in files.items():
        RemotePath(f"{s3}/{key}").write_bytes(data)
    config = {
        "inputs": [{"path": f"{s3}/raw"}, {"path": f"{s3}/sft/oasst.jsonl"}, {"path": f"{s3}/copies.jsonl"},
                   {"path": f"{s3}/again"}],
        "filters": base_config()["filters"],
        "dedup": {"exact": {}, "minhash": {"threshold": 0.7, "num_perm": 64, "ngram": 3}},
    }
    driver_bytes: list[int] = []
    call_s3 = S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):  # type: ignore[no-untyped-def]
        response = await call_s3(self, method, *args, **kwargs)
        if method == "get_object":
            driver_bytes.append(response["ContentLength"])
        return response

    monkeypatch.setattr(S3FileSystem, "_call_s3", counted)
    kept_local, rejected_local, stats_local = curate(tmp_path, config, "local")
    input_bytes = sum(len(data) for data in files.values())
    assert sum(driver_bytes) >= input_bytes  # the local engine reads every input here: the count sees it
    driver_bytes.clear()
    config["execution"] = {"engine": "ray", "address": ray_cluster, "batch_size": 150}
    kept_ray, rejected_ray, stats_ray = curate(tmp_path, config, "ray")
    print(f"driver read {sum(driver_bytes)} of {input_bytes} input bytes in {len(driver_bytes)} GETs")
    assert sum(driver_bytes) < 0.01 * input_bytes, (sum(driver_bytes), input_bytes)
    assert stats_ray["stages"][0]["files"] == stats_local["stages"][0]["files"]
    assert any(i.endswith("~2") for i in kept_local["id"].to_list() + rejected_local["id"].to_list())
    assert kept_ray["id"].to_list() == kept_local["id"].to_list()
    assert kept_ray.equals(kept_local)
    columns = ["id", "source", "stage", "reason", "detail", "duplicate_of"]
    assert rejected_ray.select(columns).equals(rejected_local.select(columns))
    assert [s["removed_by_reason"] for s in stats_ray["stages"]] == [s["removed_by_reason"] for s in stats_local["stages"]]
