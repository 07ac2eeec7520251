"""Checkpoints and fingerprints, in process: a stage's key changes when and only when an input, an
upstream key or one of its config sections changes, and a re-run reuses exactly the stages whose
keys still match."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.core.checkpoint import Checkpoint, input_fingerprint, stage_fingerprint
from curation.core.inputs import load_config
from curation.core.plan import build_plan
from curation.core.run import remove_stale_outputs, run_pipeline
from curation.core.sections import sections
from schemas.config import CurateConfig
from schemas.record import records_frame


def config(tmp_path: Path, **sections) -> CurateConfig:
    data = tmp_path / "data.jsonl"
    if not data.exists():
        rows = [{"instruction": f"Question number {i} about rivers?", "output": f"Answer {i}: rivers flow downhill."}
                for i in range(30)]
        rows += [rows[3], rows[7]]  # exact duplicates
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"inputs": [{"path": str(data)}], **sections}))
    return load_config(path)


SECTIONS = {"filters": {"length": {"min_words": 3}}, "dedup": {"exact": {}, "minhash": {"threshold": 0.8}}}


def test_the_input_key_follows_the_input_files_and_the_inputs_section(tmp_path: Path) -> None:
    base = config(tmp_path, **SECTIONS)
    key = input_fingerprint(base)
    assert input_fingerprint(config(tmp_path, **SECTIONS)) == key  # same files, same section
    assert input_fingerprint(config(tmp_path, filters={"length": {"min_words": 9}})) == key  # not an input
    data = tmp_path / "data.jsonl"
    data.write_text(data.read_text() + json.dumps({"instruction": "One more?", "output": "Yes."}) + "\n")
    assert input_fingerprint(base) != key  # the content changed
    spec = base.inputs[0].model_copy(update={"shape": "alpaca"})
    assert input_fingerprint(base.model_copy(update={"inputs": [spec]})) != input_fingerprint(base)


def test_a_stage_key_follows_its_input_its_name_and_its_own_sections_only(tmp_path: Path) -> None:
    base = config(tmp_path, **SECTIONS)
    key = stage_fingerprint("upstream", "dedup_exact", ("dedup.exact",), base)
    assert stage_fingerprint("other upstream", "dedup_exact", ("dedup.exact",), base) != key
    assert stage_fingerprint("upstream", "dedup_minhash", ("dedup.exact",), base) != key
    stricter = config(tmp_path, **{**SECTIONS, "dedup": {"exact": {"normalize": ["case"]}, "minhash": {"threshold": 0.8}}})
    assert stage_fingerprint("upstream", "dedup_exact", ("dedup.exact",), stricter) != key
    looser_minhash = config(tmp_path, **{**SECTIONS, "dedup": {"exact": {}, "minhash": {"threshold": 0.5}}})
    assert stage_fingerprint("upstream", "dedup_exact", ("dedup.exact",), looser_minhash) == key
    other_filters = config(tmp_path, **{**SECTIONS, "filters": {"length": {"min_words": 9}}})
    assert stage_fingerprint("upstream", "dedup_exact", ("dedup.exact",), other_filters) == key
    with pytest.raises(KeyError, match="no config section 'dedup.exakt'"):
        stage_fingerprint("upstream", "dedup_exact", ("dedup.exakt",), base)


def test_every_planned_step_names_real_config_sections(tmp_path: Path) -> None:
    full = config(tmp_path, **SECTIONS, jury={"judges": [{"name": "a"}]}, preference={"ranking": "jury"},
                  export={"formats": ["openai"]})
    plan = build_plan(full, tmp_path / "run", progress=False)
    assert [s.name for s in plan] == ["filters", "dedup_exact", "dedup_minhash", "jury", "preference", "export"]
    for step in plan:
        stage_fingerprint("upstream", step.name, step.sections, full)  # raises on a section that does not exist
        assert step.sections, step.name
    assert {s.name: s.side_output for s in plan if s.side_output} == {"jury": "jury", "export": "export"}
    # each step's own section is a planned section, in the order the sections list says
    order = [s.name for s in sections() if s.step]
    owners = [order.index(step.sections[0].split(".")[0]) for step in plan]
    assert owners == sorted(owners), [step.name for step in plan]
    # and every side output is one the stale-output cleanup knows
    assert {s.side_output for s in plan if s.side_output} <= {o for s in sections() for o in s.outputs}


def test_the_sections_list_covers_every_section_of_a_run_config() -> None:
    """A new config section is a step's (a line of curation/core/plan.py STEPS) or the flow's."""
    assert sorted(s.name for s in sections()) == sorted(set(CurateConfig.model_fields) - {"inputs", "execution"})


def test_a_rerun_without_a_section_removes_that_sections_outputs_only(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for name in ("export", "jury", "decontamination", "publish.json", "kept.parquet"):
        (out / name).mkdir(parents=True) if "." not in name else (out / name).write_text("{}")
    removed = remove_stale_outputs(out, config(tmp_path, **SECTIONS, export={"formats": ["openai"]}))
    assert sorted(removed) == ["decontamination", "jury", "publish.json"]
    assert (out / "export").is_dir() and (out / "kept.parquet").exists()


def test_a_checkpoint_is_valid_for_its_key_with_its_side_files_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    empty = {"messages": None, "chosen": None, "rejected": None}
    frame = records_frame([{"id": "a", "source": "t#0", "kind": "raw", "text": "hello there friend", **empty, "meta": "{}"}])
    (run / "jury").mkdir(parents=True)
    (run / "jury" / "ratings.parquet").write_bytes(b"x")
    saved = Checkpoint(run, 3, "jury", "key-1", side_output="jury")
    saved.save(frame, None, {"in": 1, "out": 1})
    assert saved.manifest()["outputs"] == ["jury/ratings.parquet"]
    records, rejected, stats = saved.load()
    assert records.collect().equals(frame) and rejected is None and stats == {"in": 1, "out": 1}
    assert Checkpoint(run, 3, "jury", "key-2", side_output="jury").manifest() is None  # another key
    (run / "jury" / "ratings.parquet").unlink()
    assert saved.manifest() is None  # its side output is gone


def test_a_rerun_reuses_the_stages_whose_keys_match_and_recomputes_from_the_first_change(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_pipeline(config(tmp_path, **SECTIONS), out)
    assert first.stage("dedup_exact").removed == 2

    def stamps() -> dict[str, int]:
        return {p.parent.name: p.stat().st_mtime_ns for p in sorted((out / ".checkpoints").glob("*/manifest.json"))}

    before = stamps()
    assert list(before) == ["00-ingest", "01-filters", "02-dedup_exact", "03-dedup_minhash"]
    again = run_pipeline(config(tmp_path, **SECTIONS), out)
    assert stamps() == before  # nothing recomputed
    assert [s.removed_by_reason for s in again.stages] == [s.removed_by_reason for s in first.stages]
    run_pipeline(config(tmp_path, **{**SECTIONS, "dedup": {"exact": {}, "minhash": {"threshold": 0.5}}}), out)
    after = stamps()
    changed = [name for name in before if after[name] != before[name]]
    assert changed == ["03-dedup_minhash"]  # only the stage whose section changed
    run_pipeline(config(tmp_path, **SECTIONS), out, fresh=True)
    assert all(stamps()[name] != after[name] for name in after)  # fresh: every stage again
    kept = pl.read_parquet(out / "kept.parquet")
    assert kept.height == first.totals.kept


def test_run_files_are_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.core.corpus import write_parquet

    path = tmp_path / "kept.parquet"
    write_parquet([records_frame([])], path, dict(records_frame([]).schema))
    before = path.read_bytes()

    def killed_midway(self, target, *args, **kwargs):
        Path(target).write_bytes(b"PAR1 half a file")  # what a kill leaves behind
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        write_parquet([records_frame([])], path, dict(records_frame([]).schema))
    assert path.read_bytes() == before  # the old file whole, never a truncated one
    assert [p.name for p in tmp_path.iterdir()] == ["kept.parquet"]  # no temporary left
