"""Incremental refresh: versions with their dedup indexes (curation/publish/, publish/dedup.py).

Real files and the real pipeline pieces the flow uses (ingest, the dedup stages, write_run),
Alpaca rows made of Orca DPO prompts and answers (tests/fixtures), the bundled MiniLM for the semantic index.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.core.inputs import load_config
from curation.core.run import run_pipeline
from curation.core.storage import as_path
from curation.dedup import semantic
from curation.publish import indexes, versions
from curation.publish.inputs import new_inputs, refresh_inputs
from curation.publish.lock import publish_lock
from curation.publish.versions import latest_version, load_version, publish
from schemas.base import ConfigError
from schemas.record import meta_json

PARA = (
    "The city council approved the new budget on Tuesday, raising spending on public schools.",
    "On Tuesday the municipal council passed the new budget, which increases funding for state schools.",
)
QUESTION = "Summarise today's local news in one sentence."

CONFIG = """
inputs:
  - path: data/*.jsonl
dedup:
  exact: {{}}
  minhash: {{threshold: 0.8, num_perm: {num_perm}, ngram: 5}}
  semantic: {{threshold: 0.8{semantic}}}
"""


@pytest.fixture(scope="module")
def alpaca(public_data: Path) -> list[dict]:
    """Orca DPO prompts and their preferred answers as Alpaca rows (instruction, input, output)."""
    lines = (public_data / "pref" / "orca_dpo_pairs_validation_283.jsonl").read_text().splitlines()
    rows = [
        {"instruction": pair["input"]["messages"][-1]["content"], "input": "", "output": pair["preferred_output"][0]["content"]}
        for pair in map(json.loads, lines)
    ]
    # Long enough answers that near-duplicate edits stay above the Jaccard threshold.
    return [r for r in rows if len(r["output"]) > 300][:50]


def row(rid: str, source: dict) -> dict:
    return {"id": rid, "instruction": source["instruction"], "input": source["input"], "output": source["output"]}


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def edit_words(text: str, every: int = 100) -> str:
    words = text.split(" ")
    return " ".join("zebra" if i % every == 7 else w for i, w in enumerate(words))


class Embeds:
    """Counts the texts embedded for published-version indexes (the dedup_published stage and
    publish), not those the in-run semantic stage embeds: a stand-in for the semantic module
    where curation.publish.indexes looks it up."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []

        class Counted:
            def __getattr__(_, name: str):
                return getattr(semantic, name)

            def embed(_, texts, cfg, progress):
                self.texts += texts
                return semantic.embed(texts, cfg, progress)

        monkeypatch.setattr(indexes, "semantic", Counted())


def run_refresh(root: Path, run: str, embeds: Embeds | None = None, config_name: str = "config.yaml", publish_dir=None):
    """What the flow does: under the lock, only new files -> the plan (in-run dedup,
    dedup_published) -> publish."""
    path = root / config_name
    config = load_config(path)
    publish_dir, run_dir = publish_dir or root / "published", root / "runs" / run
    with publish_lock(publish_dir):
        previous = load_version(publish_dir)
        specs = refresh_inputs(publish_dir, config.inputs)
        config.inputs = specs
        if embeds:
            embeds.texts.clear()  # count from here: what this refresh embeds
        stats = run_pipeline(config, run_dir, path, previous=previous, in_memory=True)
        version = publish(publish_dir, run_dir, config, previous)
    return specs, stats, stats.stage("dedup_published"), version


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def published(alpaca: list[dict], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """v1 from A + B; then file C arrives and a refresh publishes v2."""
    mp = pytest.MonkeyPatch()
    try:
        root = tmp_path_factory.mktemp("refresh")
        (root / "config.yaml").write_text(CONFIG.format(num_perm=128, semantic=""))
        para_a = {"id": "a_para", "instruction": QUESTION, "input": "", "output": PARA[0]}
        write(root / "data" / "a.jsonl", [row(f"a{i:02d}", r) for i, r in enumerate(alpaca[:12])] + [para_a])
        write(root / "data" / "b.jsonl", [row(f"b{i:02d}", r) for i, r in enumerate(alpaca[12:24])])
        embeds = Embeds(mp)
        specs1, stats1, _, v1 = run_refresh(root, "r1", embeds)
        v1_bytes = snapshot(v1)

        upper = dict(row("c_exact", alpaca[3]), output=alpaca[3]["output"].upper() + " !!")
        near = dict(row("c_near", alpaca[14]), output=edit_words(alpaca[14]["output"]))
        para_c = {"id": "c_para", "instruction": QUESTION, "input": "", "output": PARA[1]}
        new = [row(f"c{i:02d}", r) for i, r in enumerate(alpaca[30:38])]
        copy = dict(new[2], id="c_copy")  # C's own duplicate of c02
        conflict = row("b05", alpaca[40])  # new content under a published id
        write(root / "data" / "c.jsonl", [upper, new[0], near, new[1], para_c, new[2], copy, *new[3:], conflict])
        specs2, stats2, stage2, v2 = run_refresh(root, "r2", embeds)
        yield {
            "root": root, "v1": v1, "v2": v2, "v1_bytes": v1_bytes, "specs1": specs1, "specs2": specs2,
            "stats1": stats1, "stats2": stats2, "stage2": stage2, "embedded2": list(embeds.texts),
            "new_ids": [r["id"] for r in new],
        }  # fmt: skip
    finally:
        mp.undo()


def test_first_version_holds_everything(published: dict) -> None:
    v1 = published["v1"]
    assert [Path(s.path).name for s in published["specs1"]] == ["a.jsonl", "b.jsonl"]
    kept = pl.read_parquet(v1 / "kept.parquet")
    assert kept.height == 25  # nothing in A + B is a duplicate
    manifest = json.loads((v1 / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["parent"] is None
    assert [Path(d["path"]).name for d in manifest["inputs"]] == ["a.jsonl", "b.jsonl"]
    index = json.loads((v1 / "index" / "index.json").read_text())
    assert set(index) == {"exact", "minhash", "semantic"}
    assert index["minhash"]["settings"]["num_perm"] == 128
    assert np.load(v1 / "index" / "minhash.npy").shape == (128, 25)
    assert np.load(v1 / "index" / "semantic.npy").shape == (25, 256)  # the static model by default
    assert index["semantic"]["settings"]["model"] == "bundled:minilm-static-256-centred"
    diff = json.loads((v1 / "diff.json").read_text())
    assert diff["added"] == kept["id"].to_list() and diff["removed"] == []


def test_refresh_ingests_only_new_files(published: dict) -> None:
    assert [Path(s.path).name for s in published["specs2"]] == ["c.jsonl"]
    assert published["stats2"].totals.ingested == 13
    manifest = json.loads((published["v2"] / "manifest.json").read_text())
    assert [(Path(d["path"]).name, d["version"]) for d in manifest["inputs"]] == [
        ("a.jsonl", 1), ("b.jsonl", 1), ("c.jsonl", 2)
    ]  # fmt: skip
    root = published["root"]
    files = sorted((root / "data").glob("*.jsonl"))
    assert new_inputs(root / "published", files) == []
    assert refresh_inputs(root / "published", load_config(root / "config.yaml").inputs) == []


def test_duplicates_of_published_records_are_rejected(published: dict) -> None:
    rejected = pl.read_parquet(published["root"] / "runs" / "r2" / "rejected.parquet")
    by_id = {r["id"]: r for r in rejected.to_dicts()}
    assert set(by_id) == {"c_exact", "c_near", "c_para", "c_copy", "b05"}
    assert (by_id["c_copy"]["stage"], by_id["c_copy"]["duplicate_of"]) == ("dedup_exact", "c02")  # in-run
    expected = {"c_exact": ("a03", "exact"), "c_near": ("b02", "minhash"), "c_para": ("a_para", "semantic")}
    for rid, (old, kind) in expected.items():
        r = by_id[rid]
        assert (r["stage"], r["reason"], r["duplicate_of"]) == ("dedup_published", "duplicate_of_published", old)
        assert r["detail"].startswith(f"{kind}:") and r["detail"].endswith("in v0001")
    assert (by_id["b05"]["reason"], by_id["b05"]["duplicate_of"]) == ("published_id", "b05")
    figures = published["stage2"].figures
    assert figures.matched == {"exact": 1, "minhash": 1, "semantic": 1} and figures.id_conflicts == 1
    assert figures.rebuilt_indexes == []


def test_new_version_is_old_plus_new(published: dict) -> None:
    v1, v2 = published["v1"], published["v2"]
    old, new = pl.read_parquet(v1 / "kept.parquet"), pl.read_parquet(v2 / "kept.parquet")
    assert new.head(old.height).equals(old)  # published records first, unchanged
    assert new["id"].to_list()[old.height :] == published["new_ids"]
    diff = json.loads((v2 / "diff.json").read_text())
    assert diff == {"version": 2, "parent": 1, "added": published["new_ids"], "removed": [], "score_shifts": []}
    assert latest_version(v2.parent) == 2 and (v2.parent / "LATEST").read_text() == "v0002\n"
    assert snapshot(v1) == published["v1_bytes"]  # v1 untouched
    manifest = json.loads((v2 / "manifest.json").read_text())
    assert manifest["counts"]["records"] == 33 and manifest["counts"]["added"] == 8
    assert not [p for p in v2.parent.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temporary left


def test_index_rows_are_reused(published: dict) -> None:
    v1, v2 = published["v1"], published["v2"]
    n1 = pl.read_parquet(v1 / "kept.parquet").height
    meta = json.loads((v2 / "index" / "index.json").read_text())
    for kind in ("exact", "minhash", "semantic"):
        assert (meta[kind]["rows"], meta[kind]["reused_rows"], meta[kind]["computed_rows"]) == (n1 + 8, n1, 8)
        ids = pl.read_parquet(v2 / "index" / f"{kind}_ids.parquet")["id"].to_list()
        assert ids == pl.read_parquet(v2 / "kept.parquet")["id"].to_list()
    # Published embeddings are copied, not recomputed; the refresh embedded only C's records that
    # reached the semantic check (once: publish reused them).
    assert np.array_equal(np.load(v2 / "index" / "semantic.npy")[:n1], np.load(v1 / "index" / "semantic.npy"))
    assert np.array_equal(np.load(v2 / "index" / "minhash.npy")[:, :n1], np.load(v1 / "index" / "minhash.npy"))
    assert len(published["embedded2"]) == 8 + 2  # the new records, c_para and the b05 conflict
    fresh = semantic.embed(published["embedded2"][:1], semantic.SemanticDedup(), False)
    assert np.allclose(np.load(v2 / "index" / "semantic.npy")[n1], fresh[0], atol=1e-5)


def test_settings_change_rebuilds_that_index(published: dict, alpaca: list[dict], monkeypatch) -> None:
    root = published["root"]
    (root / "config.yaml").write_text(CONFIG.format(num_perm=64, semantic=""))
    near = dict(row("d_near", alpaca[31]), output=edit_words(alpaca[31]["output"]))
    write(root / "data" / "d.jsonl", [near, row("d00", alpaca[45]), row("d01", alpaca[46])])
    embeds = Embeds(monkeypatch)
    specs, _, stage, v3 = run_refresh(root, "r3", embeds)
    assert [Path(s.path).name for s in specs] == ["d.jsonl"]
    assert stage.figures.rebuilt_indexes == ["minhash"]
    rejected = pl.read_parquet(root / "runs" / "r3" / "rejected.parquet").filter(pl.col("stage") == "dedup_published").to_dicts()
    assert [(r["id"], r["duplicate_of"], r["detail"][:8]) for r in rejected] == [("d_near", "c01", "minhash:")]
    meta = json.loads((v3 / "index" / "index.json").read_text())
    n2 = pl.read_parquet(root / "published" / "v0002" / "kept.parquet").height
    assert meta["minhash"]["settings"]["num_perm"] == 64
    assert (meta["minhash"]["reused_rows"], meta["minhash"]["rows"]) == (0, n2 + 2)
    assert np.load(v3 / "index" / "minhash.npy").shape == (64, n2 + 2)
    assert meta["semantic"]["reused_rows"] == n2 and len(embeds.texts) == 2  # only d00, d01
    assert latest_version(root / "published") == 3


def test_another_encoder_re_embeds_the_published_version(published: dict, alpaca: list[dict], monkeypatch) -> None:
    root = published["root"]
    (root / "config.yaml").write_text(CONFIG.format(num_perm=64, semantic=", model: all-MiniLM-L6-v2"))
    write(root / "data" / "e.jsonl", [row("e00", alpaca[47]), row("e01", alpaca[48])])
    embeds = Embeds(monkeypatch)
    _, _, stage, v4 = run_refresh(root, "r4", embeds)
    assert stage.figures.rebuilt_indexes == ["semantic"]  # stored by the static model: not comparable
    n3 = pl.read_parquet(root / "published" / "v0003" / "kept.parquet").height
    assert len(embeds.texts) == n3 + 2  # every published record again, then the two new ones
    meta = json.loads((v4 / "index" / "index.json").read_text())
    assert meta["semantic"]["settings"]["model"] == "bundled:all-MiniLM-L6-v2"
    assert (meta["semantic"]["reused_rows"], meta["semantic"]["rows"]) == (0, n3 + 2)
    assert np.load(v4 / "index" / "semantic.npy").shape == (n3 + 2, 384)
    assert meta["minhash"]["reused_rows"] == n3  # the other indexes are reused


def test_diff_reports_score_shifts() -> None:
    def frame(scores: dict[str, float | None]) -> pl.DataFrame:
        return pl.DataFrame({"id": list(scores), "meta": [meta_json({"jury": {"score": s}}) for s in scores.values()]})

    diff = versions.diff_versions(frame({"a": 3.0, "b": 4.0, "c": None}), frame({"b": 2.5, "c": 4.0, "d": 1.0}))
    assert diff["added"] == ["d"] and diff["removed"] == ["a"]
    assert diff["score_shifts"] == [{"id": "b", "old": 4.0, "new": 2.5}, {"id": "c", "old": None, "new": 4.0}]


def test_failed_publish_leaves_latest_alone(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "config.yaml").write_text("inputs:\n  - path: data/*.jsonl\ndedup:\n  exact: {}\n")
    write(
        tmp_path / "data" / "a.jsonl", [{"id": "x", "instruction": "Say hello to me", "input": "", "output": "Hello!"}]
    )
    run_refresh(tmp_path, "r1")
    write(tmp_path / "data" / "b.jsonl", [{"id": "y", "instruction": "Say bye to me", "input": "", "output": "Bye!"}])

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(versions, "diff_versions", boom)
    with pytest.raises(OSError):
        run_refresh(tmp_path, "r2")
    publish_dir = tmp_path / "published"
    assert latest_version(publish_dir) == 1
    assert sorted(p.name for p in publish_dir.iterdir()) == [".lock", "LATEST", "v0001"]
    # Another refresh published after this run loaded v1: publishing on top of v1 is refused.
    monkeypatch.undo()
    previous = load_version(publish_dir)
    run_refresh(tmp_path, "r3")
    with pytest.raises(versions.PublishError, match="latest version is now 2"):
        publish(publish_dir, tmp_path / "runs" / "r3", load_config(tmp_path / "config.yaml"), previous)


def test_version_folders_that_latest_does_not_name_are_never_skipped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A version newer than LATEST (a publish stopped before moving it) is named in a warning and
    numbered past; version folders without any LATEST are ambiguous: exit 2 naming them."""
    (tmp_path / "config.yaml").write_text("inputs:\n  - path: data/*.jsonl\ndedup:\n  exact: {}\n")
    write(tmp_path / "data" / "a.jsonl", [{"id": "x", "instruction": "Say hello to me", "input": "", "output": "Hello!"}])
    run_refresh(tmp_path, "r1")
    publish_dir = tmp_path / "published"
    shutil.copytree(publish_dir / "v0001", publish_dir / "v0002")  # complete, but LATEST still says v0001
    write(tmp_path / "data" / "b.jsonl", [{"id": "y", "instruction": "Say bye to me", "input": "", "output": "Bye!"}])
    with caplog.at_level(logging.WARNING, logger="curation.publish.versions"):
        *_, version = run_refresh(tmp_path, "r2")
    assert "v0002 is newer than LATEST (v0001) and was never published" in caplog.text
    assert version.name == "v0003" and load_version(publish_dir).manifest["parent"] == 1

    (publish_dir / "LATEST").unlink()
    message = r"publish.dir: .*published holds v0001, v0002, v0003 but no LATEST: .*echo v0003 > "
    with pytest.raises(ConfigError, match=message):
        load_version(publish_dir)
    with pytest.raises(ConfigError, match=message):
        run_refresh(tmp_path, "r3")  # nothing is ingested against an empty past
    assert not (tmp_path / "runs" / "r3").exists()


def two_refresh_configs(tmp_path: Path) -> None:
    """a.yaml and b.yaml, each reading its own three new records (two refreshes of one dataset)."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(f"inputs:\n  - path: data_{name}/*.jsonl\ndedup:\n  exact: {{}}\n")
        write(tmp_path / f"data_{name}" / "rows.jsonl", [
            {"id": f"{name}{i}", "instruction": f"Question {name} {i}?", "input": "", "output": f"Answer {i}."}
            for i in range(3)
        ])  # fmt: skip


def test_overlapping_refreshes_publish_one_after_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    two_refresh_configs(tmp_path)
    publish_dir = tmp_path / "published"
    publish_dir.mkdir()
    (publish_dir / ".v0007.killed").mkdir()  # what a killed publish leaves behind
    holding, slow_diff = threading.Event(), versions.diff_versions

    def diff_while_the_other_waits(old, new):  # the first refresh, mid-publish, holds the lock
        holding.set()
        time.sleep(0.5)
        return slow_diff(old, new)

    monkeypatch.setattr(versions, "diff_versions", diff_while_the_other_waits)
    first = threading.Thread(target=run_refresh, args=(tmp_path, "ra", None, "a.yaml"))
    first.start()
    assert holding.wait(30)
    with pytest.raises(ConfigError, match="another refresh is publishing here"):
        with publish_lock(publish_dir, wait=False):
            pass
    with caplog.at_level(logging.WARNING, logger="curation.publish.lock"):
        run_refresh(tmp_path, "rb", None, "b.yaml")  # waits for the first, then dedups against its version
    first.join()

    assert "waiting for it to finish" in caplog.text
    v1, v2 = load_version(publish_dir, 1), load_version(publish_dir, 2)
    assert (v1.manifest["parent"], v2.manifest["parent"]) == (None, 1)
    assert v1.kept["id"].to_list() == ["a0", "a1", "a2"]
    assert v2.kept["id"].to_list() == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert latest_version(publish_dir) == 2
    assert (publish_dir / "LATEST").stat().st_mode & 0o777 == 0o644
    assert not (publish_dir / ".v0007.killed").exists()


@pytest.mark.parametrize("verify", [True, False])
def test_minhash_match_index_finds_the_earliest_published_match(alpaca: list[dict], verify: bool) -> None:
    from curation.dedup import minhash
    from schemas.config import MinHashDedup

    cfg = MinHashDedup(verify=verify)
    old = pl.Series([r["output"] for r in alpaca[:6]] + [alpaca[2]["output"]])  # row 6 repeats row 2
    new = pl.Series(["short unrelated text", edit_words(alpaca[2]["output"]), alpaca[9]["output"], ""])
    old_docs, old_sigs = minhash.index_signatures(old, cfg)
    docs, sigs = minhash.index_signatures(new, cfg)
    assert docs.tolist() == [0, 1, 2]  # no words, no shingles
    match, score = minhash.match_index(new, docs, sigs, old, old_docs, old_sigs, cfg)
    assert match.tolist() == [-1, 2, -1, -1]
    assert score[1] >= cfg.threshold if verify else score[1] > 0.5


def test_sibling_answers_are_not_rejected_as_published_duplicates(tmp_path: Path, alpaca: list[dict]) -> None:
    """A new answer equal to a published one is still a candidate for a preference pair when the
    new records hold another answer to its prompt: kept with preference configured, else rejected."""
    source = alpaca[0]
    for name, preference in (("plain", ""), ("preference", "preference: {ranking: human}\n")):
        root = tmp_path / name
        root.mkdir()
        (root / "config.yaml").write_text("inputs:\n  - path: data/*.jsonl\ndedup:\n  exact: {}\n" + preference)
        write(root / "data" / "a.jsonl", [row("a0", source)])
        run_refresh(root, "r1")
        again = dict(row("c_again", source), output=source["output"].upper())  # the published answer
        other = dict(row("c_other", alpaca[1]), instruction=source["instruction"], input=source["input"])
        write(root / "data" / "c.jsonl", [again, other])
        _, _, stage, _ = run_refresh(root, "r2")
        if preference:
            assert stage.removed == 0 and stage.figures.siblings_protected == 1
        else:
            assert stage.removed_by_reason == {"duplicate_of_published": 1} and stage.figures.siblings_protected is None


@pytest.mark.parametrize("verify", [True, False])
def test_a_published_record_that_asks_the_reverse_is_no_duplicate(tmp_path: Path, verify: bool) -> None:
    """The semantic match against the published version is decided like the in-run one
    (curation.dedup.verify): the same words in the other direction are another task."""
    (tmp_path / "config.yaml").write_text(
        f"inputs:\n  - path: data/*.jsonl\ndedup:\n  semantic: {{threshold: 0.8, verify: {str(verify).lower()}}}\n"
    )
    answer = "Divide by two again and again, then read the remainders from the last to the first."
    write(tmp_path / "data" / "a.jsonl", [{"id": "a0", "instruction": "Convert the decimal number 10 to binary.",
                                           "input": "", "output": answer}])
    run_refresh(tmp_path, "r1")
    write(tmp_path / "data" / "b.jsonl", [{"id": "b0", "instruction": "Convert the binary number 10 to decimal.",
                                           "input": "", "output": answer},
                                          {"id": "b1", "instruction": "Name the three primary colours of paint.",
                                           "input": "", "output": "Red, yellow and blue are the traditional three."}])
    _, _, stage, _ = run_refresh(tmp_path, "r2")
    assert stage.removed_by_reason == ({} if verify else {"duplicate_of_published": 1})


def test_refreshes_from_and_to_a_bucket_publish_what_they_publish_on_disk(
    alpaca: list[dict], tmp_path: Path, s3: str
) -> None:
    """Gzipped JSON Lines read from the bucket, two versions published to it: the same records,
    diffs and manifests (but for paths and times) as the same refreshes on local files."""
    import gzip

    from curation.core.storage import RemotePath

    results = {}
    for where in ("disk", "s3"):
        root = tmp_path / where
        data = f"{s3}/data" if where == "s3" else str(root / "data")
        (root / "config.yaml").parent.mkdir(parents=True)
        (root / "config.yaml").write_text(f"inputs:\n  - path: {data}/*.jsonl.gz\ndedup:\n  exact: {{}}\n  minhash: {{}}\n")
        publish_dir = RemotePath(f"{s3}/published") if where == "s3" else root / "published"
        batches = [[row(f"a{i:02d}", r) for i, r in enumerate(alpaca[:12])],
                   [row(f"c{i:02d}", r) for i, r in enumerate(alpaca[10:20])]]  # c00, c01 repeat a10, a11
        versions_made = []
        for n, rows in enumerate(batches):
            body = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), mtime=0)
            target = as_path(f"{data}/part{n}.jsonl.gz")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            versions_made.append(run_refresh(root, f"r{n}", publish_dir=publish_dir)[3])
        assert str(versions_made[1]) == f"{publish_dir}/v0002"
        v1, v2 = load_version(publish_dir, 1), load_version(publish_dir, 2)
        assert latest_version(publish_dir) == 2 and (publish_dir / "LATEST").read_text() == "v0002\n"
        assert not [p for p in publish_dir.iterdir() if p.name.startswith(".v")]  # no temporary prefix left
        results[where] = (v1, v2, json.loads((publish_dir / "v0002" / "diff.json").read_text()))
    (d1, d2, d_diff), (s1, s2, s_diff) = results["disk"], results["s3"]
    assert s_diff == d_diff and len(d_diff["added"]) == 8
    for local, remote in ((d1, s1), (d2, s2)):
        assert remote.kept.drop("source").equals(local.kept.drop("source"))
        assert [i["sha256"] for i in remote.manifest["inputs"]] == [i["sha256"] for i in local.manifest["inputs"]]
        assert remote.manifest["files"].keys() == local.manifest["files"].keys()
    assert s2.kept["source"][-1] == f"{s3}/data/part1.jsonl.gz:10"


def test_overlapping_refreshes_against_a_bucket_publish_one_after_the_other(
    tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock object: a conditional put decides which refresh publishes first; the other waits
    (or, with wait=False, is refused), then publishes the next version on top of the first's."""
    from curation.core.storage import RemotePath
    from curation.publish import lock

    two_refresh_configs(tmp_path)
    publish_dir = RemotePath(f"{s3}/published")
    (publish_dir / ".v0007.killed" / "kept.parquet").write_bytes(b"partial")  # what a killed publish leaves
    holding, slow_diff = threading.Event(), versions.diff_versions

    def diff_while_the_other_waits(old, new):
        holding.set()
        time.sleep(1.0)
        return slow_diff(old, new)

    monkeypatch.setattr(versions, "diff_versions", diff_while_the_other_waits)
    monkeypatch.setattr(lock, "POLL_SECONDS", 0.1)
    first = threading.Thread(target=run_refresh, args=(tmp_path, "ra", None, "a.yaml", publish_dir))
    first.start()
    assert holding.wait(30)
    assert json.loads((publish_dir / ".lock").read_bytes())["expires"] > time.time()
    with pytest.raises(ConfigError, match=f"{publish_dir}: another refresh is publishing here"):
        with publish_lock(str(publish_dir), wait=False):
            pass
    with caplog.at_level(logging.WARNING, logger="curation.publish.lock"):
        run_refresh(tmp_path, "rb", None, "b.yaml", publish_dir)
    first.join()
    assert "waiting for it to finish" in caplog.text
    v1, v2 = load_version(publish_dir, 1), load_version(publish_dir, 2)
    assert (v1.manifest["parent"], v2.manifest["parent"]) == (None, 1)
    assert v2.kept["id"].to_list() == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert not (publish_dir / ".v0007.killed").exists() and not (publish_dir / ".lock").exists()


def test_a_lock_object_whose_lease_ran_out_is_taken_over_once(s3: str, caplog: pytest.LogCaptureFixture) -> None:
    from curation.core.storage import RemotePath

    folder = RemotePath(f"{s3}/published")
    (folder / ".lock").write_bytes(json.dumps({"holder": "killed:1", "expires": time.time() - 1}).encode())
    with caplog.at_level(logging.WARNING, logger="curation.publish.lock"):
        with publish_lock(str(folder), wait=False):
            assert json.loads((folder / ".lock").read_bytes())["holder"] != "killed:1"
            with pytest.raises(ConfigError, match="another refresh is publishing here"):
                with publish_lock(str(folder), wait=False):  # a live lease is never taken over
                    pass
    assert "the lock of killed:1 ran out" in caplog.text
    assert not (folder / ".lock").exists()


def test_a_run_into_a_bucket_writes_what_it_writes_on_disk_and_resumes_on_another_machine(
    alpaca: list[dict], tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`--out s3://...`: the run works in a staging folder and mirrors it. Its run files equal the
    same run's on disk; a run stopped after a stage whose staging folder is then lost (another
    machine) restores that stage from the bucket's checkpoints instead of computing it again."""
    from curation.core.checkpoint import CHECKPOINTS
    from curation.core.mirror import STAGING_ENV, RunMirror
    from curation.core.run import Call
    from curation.core.storage import RemotePath

    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "staging"))
    rows = [row(f"a{i:02d}", r) for i, r in enumerate(alpaca[:20])] + [dict(row("a_copy", alpaca[3]))]
    rows[5]["output"] += " Write to jane.doe@corp-mail.net for details."
    write(tmp_path / "data" / "a.jsonl", rows)
    path = tmp_path / "config.yaml"
    path.write_text("inputs:\n  - path: data/*.jsonl\npii: {}\ndedup:\n  exact: {}\n  minhash: {}\nexport: {}\n")
    run_files = ("kept.parquet", "rejected.parquet", "export")

    def files(folder) -> dict[str, bytes]:
        found = {}
        for name in run_files:
            whole = (folder / name).is_dir()
            found |= {f"{name}/{rel}": data for rel, data in snapshot(folder / name).items()} if whole else {
                name: (folder / name).read_bytes()}
        return found

    local_stats = run_pipeline(load_config(path), tmp_path / "a", path)
    on_disk = files(tmp_path / "a")
    calls: list[str] = []

    def stop_after_dedup(call: Call):
        result = call.run()
        calls.append(call.name)
        if call.name == "dedup_exact":
            raise KeyboardInterrupt  # the machine goes away after this stage
        return result

    url = f"{s3}/runs/a"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(load_config(path), url, path, around=stop_after_dedup)
    remote = RemotePath(url)
    stored = sorted(p.name for p in (remote / CHECKPOINTS).iterdir())
    # ingest's records were discarded after the PII step (they hold what it redacts): here too
    assert stored == ["01-pii", "02-dedup_exact"], stored
    assert not (remote / "kept.parquet").exists()
    shutil.rmtree(RunMirror(remote).local)  # another machine: nothing local

    calls.clear()
    with caplog.at_level(logging.INFO, logger="curation.core.run"):
        stats = run_pipeline(load_config(path), url, path)
    restored = {r.getMessage().split(":")[0] for r in caplog.records if "restored from" in r.getMessage()}
    assert restored == {"pii", "dedup_exact"}
    assert stats.totals == local_stats.totals
    local = tmp_path / "copy"
    local.mkdir()
    for name in run_files:
        (remote / name).get(local / name)
    copied = files(local)
    # axolotl.yaml names its files by absolute local path: the staging folder's (not the URL)
    assert copied.pop("export/axolotl.yaml") != on_disk.pop("export/axolotl.yaml")
    assert copied == on_disk and len(on_disk) > 3
    assert json.loads((remote / "stats.json").read_text())["totals"]["kept"] == local_stats.totals.kept
