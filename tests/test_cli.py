"""The `curate` command as a user runs it: validation errors, and one real end-to-end run.

Config and input errors are checked by calling the CLI's `main` in this process (what the
console script calls); one test runs the real `python -m flows.cli` process, and the end-to-end
runs go through it too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from openai_server import FakeOpenAI, Reply

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


def curate(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1800,
    )


def main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """flows.cli.main in this process: (exit code, stdout, stderr)."""
    from flows.cli import main as cli_main

    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_validate_accepts_the_demo_config(capsys: pytest.CaptureFixture) -> None:
    code, out, err = main(capsys, "validate", str(DEMO))
    assert code == 0, err
    assert "valid" in out
    # What was detected in each file, from a sample (paths relative to the config's folder).
    assert "../data/sft/oasst_en_100_tree.jsonl (jsonl, ascii): oasst, 100 rows read, 564 records, 0 rejected" in out
    assert "../data/pref/orca_dpo_pairs_validation_283.jsonl (jsonl, utf-8): openai_dpo, 200 rows read" in out


def test_validate_lists_skipped_files_and_mixed_shapes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("# About this data")
    rows = [{"text": "a document"}, {"instruction": "Say hi.", "output": "Hi."}]
    (tmp_path / "data" / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = main(capsys, "validate", str(write_config(tmp_path, {"inputs": [{"path": "data"}]})))
    assert code == 0, err
    assert "data/mixed.jsonl (jsonl, ascii): mixed: text 1, alpaca 1, 2 rows read, 2 records, 0 rejected" in out
    assert "skipped (not a data file): data/README.md" in out


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"inputs": [{"path": "x.jsonl"}], "filters": {"length": {"min_wrods": 3}}},
            "filters.length.min_wrods: unknown key",
        ),
        (
            {"inputs": [{"path": "{data}"}], "filters": {"length": {"min_words": 9, "max_words": 2}}},
            "filters.length: min_words (9) is greater than max_words (2)",
        ),
        (
            {"inputs": [{"path": "{data}"}], "dedup": {"minhash": {"threshold": 1.5}}},
            "dedup.minhash.threshold: Input should be less than 1",
        ),
        ({"inputs": [{"path": "{data}", "format": "xml"}]}, "inputs[0].format: Input should be"),
        ({"inputs": [{"path": "missing/*.jsonl"}]}, "inputs[0].path: no file matches"),
        ({"inputs": []}, "inputs: List should have at least 1 item"),
    ],
)
def test_invalid_configs_fail_with_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture, config: dict, expected: str
) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a small document"}\n')
    for spec in config["inputs"]:
        spec["path"] = spec["path"].replace("{data}", str(data))
    path = write_config(tmp_path, config)
    for args in (("validate", str(path)), ("run", str(path), "--out", str(tmp_path / "run"))):
        code, _, err = main(capsys, *args)
        assert code == 2, err
        assert expected in err
    assert not (tmp_path / "run").exists()


def test_the_real_command_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    done = curate("run", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert "config file not found" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_unknown_input_format_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data.xyz").write_text("hello")
    code, _, err = main(capsys, "validate", str(write_config(tmp_path, {"inputs": [{"path": "data.xyz"}]})))
    assert code == 2
    assert "data.xyz" in err and "format" in err


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("out_is_a_file", "--out {tmp}/taken: exists and is not a directory"),
        ("publish_dir_is_a_file", "publish.dir {tmp}/taken: exists and is not a directory"),
        ("rubric_without_answer", "judge strict: the rubric never shows the answer it rates: use {{ answer }}"),
        ("rubric_not_a_template", "judge strict: the rubric never shows the answer it rates"),
        ("template_without_chunk", "synthesis.template: the prompt never shows the text"),
    ],
)
def test_outputs_and_templates_are_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str, expected: str
) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a small document"}\n')
    (tmp_path / "taken").write_text("a file where a folder should be")
    (tmp_path / "rubric.jinja").write_text("Rate how helpful this is: {{ prompt }}")
    (tmp_path / "prompt.jinja").write_text("Write {{ n }} questions.")
    config: dict = {"inputs": [{"path": str(data)}]}
    out = tmp_path / ("taken" if case == "out_is_a_file" else "run")
    if case == "publish_dir_is_a_file":
        config["publish"] = {"dir": str(tmp_path / "taken")}
    if case.startswith("rubric"):
        rubric = str(tmp_path / "rubric.jinja") if case == "rubric_without_answer" else "/etc/passwd"
        config["jury"] = {"judges": [{"name": "strict", "rubric": rubric}]}
    if case == "template_without_chunk":
        config["synthesis"] = {"template": str(tmp_path / "prompt.jinja")}
    path = write_config(tmp_path, config)
    commands = [("run", str(path), "--out", str(out))] + ([] if case == "out_is_a_file" else [("validate", str(path))])
    for args in commands:
        code, _, err = main(capsys, *args)
        assert code == 2, err
        assert expected.replace("{tmp}", str(tmp_path)) in err
        assert err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_jury_that_cannot_judge_stops_the_run_publishes_nothing_and_leaks_no_key(
    tmp_path: Path, prefect_server: dict[str, str], openai_server: FakeOpenAI
) -> None:
    secret = "sk-PLANTED-7f3a9c2e5b1d8046-KEY"
    # As some servers do: the refusal echoes the key, here minus its last characters.
    openai_server.handler = lambda body: Reply(status=401, text=f"Incorrect API key provided: {secret[:-4]}")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Question {i}?", "output": f"Answer {i}."}) + "\n" for i in range(8)))
    judge = {"endpoint": {"base_url": openai_server.base_url, "model": "judge-m", "api_key_env": "CURATE_TEST_KEY"}}
    config = write_config(tmp_path, {
        "inputs": [{"path": str(data)}],
        "jury": {"judges": [{"name": "helpful", "model": judge}], "min_score": 2},
        "publish": {"dir": str(tmp_path / "published")},
    })  # fmt: skip
    env = {**prefect_server, "CURATE_TEST_KEY": secret}
    done = curate("run", str(config), "--out", str(tmp_path / "run"), "--no-progress", env=env)

    assert done.returncode == 4, done.stderr[-3000:]
    assert f"curate: stopped: judge helpful: endpoint {openai_server.base_url} judge-m does not answer: http 401" in done.stderr
    assert "check the API key" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "kept.parquet").exists()
    assert not (tmp_path / "published" / "LATEST").exists()
    fragments = {secret[i : i + 8] for i in range(len(secret) - 7)}
    prefect_files = b"".join(p.read_bytes() for p in Path(prefect_server["PREFECT_HOME"]).rglob("*") if p.is_file())
    for where, text in (("output", done.stdout + done.stderr), ("Prefect's files", prefect_files.decode("latin-1"))):
        assert not [f for f in fragments if f in text], f"a fragment of the key is in {where}"
    assert b"Incorrect API key provided" in prefect_files  # the message itself did reach Prefect's logs


def test_a_failed_validation_suite_exits_3_with_its_failures(tmp_path: Path, curate_here) -> None:
    """`severity: fail` stops the run (`warn` records the same failures and goes on: test_validate)."""
    rows = [
        {"messages": [{"role": "user", "content": "Hi there, how are you?"},
                      {"role": "assistant", "content": "Fine, thanks for asking."}]},
        {"messages": [{"role": "user", "content": "Question one?"}, {"role": "user", "content": "And two?"},
                      {"role": "assistant", "content": "Both answered here."}]},
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    suites = {"sft": {"severity": "fail"}}
    config = write_config(tmp_path, {"inputs": [{"path": str(data)}], "validation": {"suites": suites}})
    done = curate_here("run", str(config), "--out", str(tmp_path / "run"), "--no-progress")
    assert done.returncode == 3, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "validation" / "summary.json").read_text())
    (sft,) = summary["suites"]
    assert not sft["success"] and [f["column"] for f in sft["failed"]] == ["roles_alternate"]
    assert (tmp_path / "run" / sft["data_docs"]).is_file()
    assert "suite sft" in done.stderr and "roles_alternate" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_that_keeps_nothing_exits_4_with_one_message(tmp_path: Path, curate_here) -> None:
    data = tmp_path / "short.jsonl"
    data.write_text('{"text": "too short"}\n{"text": "also short"}\n')
    config = write_config(tmp_path, {"inputs": [{"path": str(data)}], "filters": {"length": {"min_words": 5}}})
    done = curate_here("run", str(config), "--out", str(tmp_path / "run"), "--no-progress")
    assert done.returncode == 4, done.stderr[-3000:]
    assert "curate: stopped: kept 0 of 2 records" in done.stderr and "filters too_few_words 2" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "run" / "report.html").is_file()  # the report shows where the rows went


@pytest.mark.slow
def test_curate_all_on_the_demo_corpus(tmp_path: Path, prefect_server: dict[str, str]) -> None:
    """`curate all` on the demo config: curation, export, then SFT + DPO of the real 135M model."""
    out = tmp_path / "run"
    done = curate("all", str(DEMO), "--out", str(out), "--no-progress", env=prefect_server)
    assert done.returncode == 0, done.stderr[-4000:]

    kept = pl.read_parquet(out / "kept.parquet")
    rejected = pl.read_parquet(out / "rejected.parquet")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["invariant"]["holds"]
    assert stats["totals"]["ingested"] + stats["totals"]["generated"] == kept.height + rejected.height
    assert [s["stage"] for s in stats["stages"]] == [
        "ingest", "filters", "dedup_exact", "dedup_minhash", "dedup_semantic", "jury", "preference", "export",
    ]
    # The local jury scored the sft records (a sample by the LLM judges, the rest distilled). A
    # 135M judge now and then answers "-" (a minus or a bullet): no score, never a guessed one.
    jury = next(s for s in stats["stages"] if s["stage"] == "jury")
    assert jury["unscored"] <= 0.01 * jury["in"] and jury["distill"]["n_train"] > 0
    sft_meta = [json.loads(m) for m in kept.filter(pl.col("kind") == "sft")["meta"]]
    assert {m["jury"]["method"] for m in sft_meta} == {"jury", "distilled"}
    scores = [m["jury"]["score"] for m in sft_meta]
    assert all(1 <= s <= 5 for s in scores if s is not None) and scores.count(None) == jury["unscored"]
    # Preference pairs from oasst sibling ranks joined the Orca pairs.
    pairs = pl.concat([kept, rejected.select(kept.columns)]).filter(pl.col("id").str.starts_with("pref-"))
    assert pairs.height > 10 and stats["totals"]["generated"] == pairs.height  # kept, or rejected by export
    # The quality report and the validation results are in the run directory.
    assert "id=\"funnel\"" in (out / "report.html").read_text()
    assert all(s["success"] for s in json.loads((out / "validation" / "summary.json").read_text())["suites"])
    # Every record is accounted for exactly once, by id.
    assert kept["id"].n_unique() == kept.height
    assert set(kept["id"]).isdisjoint(rejected["id"])
    # Input ids survive: self-instruct instance ids and oasst leaf message ids.
    assert kept.filter(pl.col("id").str.starts_with("user_oriented_task_")).height > 200
    assert set(kept["kind"]) == {"raw", "sft", "preference"}
    # Rejects say why and where; duplicates name what they duplicate.
    assert rejected["reason"].null_count() == 0 and rejected["source"].null_count() == 0
    dups = rejected.filter(pl.col("stage").str.starts_with("dedup"))
    assert dups.height > 0 and dups["duplicate_of"].null_count() == 0
    # Each names a record that survived its stage: kept, or removed by a later stage.
    order = [s["stage"] for s in stats["stages"]]
    named = dups.join(
        rejected.select("id", pl.col("stage").alias("named_stage")), left_on="duplicate_of", right_on="id", how="left"
    )
    survived = named["named_stage"].is_null() & named["duplicate_of"].is_in(kept["id"].implode())
    later = [
        order.index(a) < order.index(b)
        for a, b in zip(named["stage"], named["named_stage"].fill_null("ingest"), strict=True)
    ]
    assert all(s or lt for s, lt in zip(survived, later, strict=True))
    # The ShareGPT dummy set repeats its identity questions: exact dedup must catch them.
    assert stats["totals"]["removed_by_stage"]["dedup_exact"] > 50

    # Exported sets load back in the shapes TRL reads.
    from datasets import load_from_disk

    sft = load_from_disk(str(out / "export" / "hf" / "sft"))
    preference = load_from_disk(str(out / "export" / "hf" / "preference"))
    assert sft["train"][0]["messages"][-1]["role"] == "assistant"
    assert preference["train"][0]["prompt"][-1]["role"] == "user"
    assert preference["train"][0]["chosen"][0]["role"] == "assistant"
    assert {"alpaca.json", "sharegpt.json", "openai.jsonl", "preference.jsonl", "README.md"} <= {
        p.name for p in (out / "export").iterdir()
    }
    # Training produced real adapters and evaluated them.
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["best"] == "main" and [r["name"] for r in summary["leaderboard"]] == ["main"]
    main = summary["candidates"]["main"]
    assert list(main["stages"]) == ["sft", "dpo"]
    for stage in ("sft", "dpo"):
        assert (out / "train" / stage / "adapter" / "adapter_model.safetensors").is_file()
        assert main["stages"][stage]["steps"] > 0
    assert main["stages"]["sft"]["eval"]["eval_loss_after"] < 20
    assert 0 <= main["stages"]["dpo"]["eval"]["reward_accuracy"] <= 1
    assert (out / "train" / "best").resolve() == (out / "train" / "dpo" / "adapter").resolve()
    # The tuned model against its base: the local jury's win-rate and the error analysis, in the report.
    win = main["win_rate"]
    assert win["win"] + win["tie"] + win["loss"] + win["unjudged"] == win["prompts"] > 0
    assert list(main["errors"]["tuned"]["counts"]) == main["errors"]["categories"]
    report = (out / "report.html").read_text()
    assert 'id="training"' in report and "Jury win-rate of the tuned model" in report and "error category" in report

    # The run is visible through the Prefect API as a completed flow with one task per stage.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

    async def runs() -> tuple:
        async with get_client() as client:
            # Explicit sort and limit: this server version rejects the client's null defaults. This
            # run's flows only: curate-then-train and its subflows (curate, train, and one
            # train-candidate). Other tests share the server, and a served schedule books future
            # runs that sort first (by expected start): runs of a deployment are left out.
            no_deployment = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(is_null_=True))
            every = await client.read_flow_runs(flow_run_filter=no_deployment, sort=FlowRunSort.START_TIME_DESC, limit=200)
            flow_runs = [r for r in every if str(out.resolve()) in (r.parameters.get("run_dir"), r.parameters.get("out_dir"))]
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in flow_runs])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=50,
            )
            return flow_runs, tasks

    import asyncio

    from prefect.settings import PREFECT_API_URL, temporary_settings

    expected = {"ingest", "filters", "dedup_exact", "dedup_minhash", "dedup_semantic", "jury", "preference",
                "export", "write-run", "validate", "report", "sft", "dpo"}
    # Task runs reach the server as events, a little after the client exits: wait for the last ones.
    for _ in range(30):
        with temporary_settings(updates={PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
            flow_runs, tasks = asyncio.run(runs())
        names = {t.name.rsplit("-", 1)[0] for t in tasks}
        if expected <= names:
            break
        time.sleep(1)
    assert len(flow_runs) == 4 and all(r.state.is_completed() for r in flow_runs)
    assert sorted(r.name for r in flow_runs if r.name.startswith("candidate-")) == ["candidate-main"]
    assert expected <= names


def test_train_finds_the_run_its_own_config_made(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """By the config's path and hash in stats.json, never by name: sft_pref.yaml must not take
    runs/sft_pref_v2-... (newer, and a prefix match)."""
    from stats_entries import export_entry

    from curation.core.rundirs import latest_run_dir, new_run_dir
    from curation.core.stats import RunStats, Totals, config_sha256
    from schemas.config import ConfigError
    from schemas.export import ExportedSet

    configs = {name: tmp_path / f"{name}.yaml" for name in ("sft_pref", "sft_pref_v2")}
    for name, path in configs.items():
        path.write_text(f"inputs: [{{path: {name}.jsonl}}]\n")

    def curated(config: Path, run: str, mtime: float, sets: tuple[str, ...] = ("sft", "preference")) -> Path:
        run_dir = tmp_path / "runs" / run
        for kind in sets:
            (run_dir / "export" / "hf" / kind).mkdir(parents=True)
        totals = Totals(ingested=1, kept=1, rejected=0)
        none = ExportedSet(not_written="no rows: no preference records reached export")
        splits = {kind: ExportedSet(train=1) if kind in sets else none for kind in ("sft", "preference")}
        export = export_entry(1, 1, splits)
        stats = RunStats(config=str(config), config_sha256=config_sha256(config), stages=[export], totals=totals)
        stats.write(run_dir)
        os.utime(run_dir / "stats.json", (mtime, mtime))
        return run_dir

    both = ["preference", "sft"]
    mine = curated(configs["sft_pref"], "sft_pref-20261201-100000", 1_000)
    curated(configs["sft_pref_v2"], "sft_pref_v2-20261201-120000", 3_000)
    (tmp_path / "runs" / "sft_pref-broken").mkdir()  # no stats.json: not a run
    # Newer, but export wrote no preference set: an sft_dpo training cannot use it, an sft one can.
    sft_only = curated(configs["sft_pref"], "sft_pref-20261201-110000", 2_000, sets=("sft",))
    stopped = curated(configs["sft_pref"], "sft_pref-20261201-130000", 4_000)
    (stopped / "INTERRUPTED").write_text("stopped by SIGINT\n")  # stopped before it could publish: not trained on
    assert new_run_dir(configs["sft_pref"]).parent == tmp_path / "runs"  # beside the config, not the cwd
    assert latest_run_dir(configs["sft_pref"], both) == mine
    assert latest_run_dir(configs["sft_pref"], ["sft"]) == sft_only
    # Edited since (say its train section): the run of the earlier version, with a warning.
    configs["sft_pref"].write_text("inputs: [{path: sft_pref.jsonl}]\ntrain: {}\n")
    assert latest_run_dir(configs["sft_pref"], both) == mine
    assert "changed since it curated" in capsys.readouterr().err
    shutil.rmtree(mine)
    with pytest.raises(ConfigError, match=r"lacks \(export/hf/preference: no rows: no preference records reached export\)"):
        latest_run_dir(configs["sft_pref"], both)
    other = tmp_path / "elsewhere" / "sft_pref.yaml"
    other.parent.mkdir()
    other.write_text(configs["sft_pref"].read_text())
    with pytest.raises(ConfigError, match="no curated run of"):
        latest_run_dir(other, both)  # same name and content, another file


def test_sources_are_relative_to_the_config_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.core.inputs import load_config
    from curation.core.run import run_pipeline

    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "docs.jsonl").write_text('{"text": "a document"}\n')
    config_path = tmp_path / "project" / "config.yaml"
    config_path.write_text("inputs: [{path: data/docs.jsonl}]\n")
    sources = []
    for cwd in (tmp_path, tmp_path / "project" / "data"):
        monkeypatch.chdir(cwd)
        stats = run_pipeline(load_config(config_path), tmp_path / f"run{len(sources)}", config_path, in_memory=True)
        sources.append(pl.read_parquet(tmp_path / f"run{len(sources)}" / "kept.parquet")["source"].to_list())
        assert stats.stage("ingest").figures.files[0].path == "data/docs.jsonl"
    assert sources == [["data/docs.jsonl:1"], ["data/docs.jsonl:1"]]


def test_a_missing_bucket_or_a_wrong_credential_exits_2_naming_the_path_not_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import S3_SECRET
    from moto import settings as moto_settings

    from curation.core.storage import RemotePath, reset_filesystems

    RemotePath(f"{s3}/in/rows.jsonl").write_text('{"text": "a small document"}\n')
    inputs = {"inputs": [{"path": f"{s3}/in/rows.jsonl"}]}
    cases = [
        ({"inputs": [{"path": "s3://no-such-bucket-q/in/*.jsonl"}]}, [], "the bucket no-such-bucket-q does not exist"),
        (inputs, ["--out", "s3://no-such-bucket-q/runs/a"], "--out s3://no-such-bucket-q/runs/a: the bucket"),
        (inputs | {"publish": {"dir": "s3://no-such-bucket-q/pub"}}, [], "publish.dir s3://no-such-bucket-q/pub: the bucket"),
    ]
    for config, extra, expected in cases:
        code, _, err = main(capsys, "run", str(write_config(tmp_path, config)), *extra)
        assert code == 2 and expected in err and err.count("\n") == 1, err
    RemotePath(f"{s3}/runs/b/kept.parquet").write_bytes(b"")  # a folder, but no run directory
    for data, expected in ((f"{s3}/runs/none", "no such file or prefix"), (f"{s3}/runs/b", "not a run directory")):
        code, _, err = main(capsys, "train", str(write_config(tmp_path, inputs | {"train": {}})), "--data", data)
        assert code == 2 and f"--data {data}: {expected}" in err and err.count("\n") == 1, err
    # The server checks signatures from here on: a secret that is not the key's is refused.
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    reset_filesystems()
    code, _, err = main(capsys, "validate", str(write_config(tmp_path, inputs)))
    assert code == 2 and f"inputs[0].path: input {s3}/in/rows.jsonl: access denied" in err, err
    assert S3_SECRET not in err and S3_SECRET[:8] not in err and "Traceback" not in err


def test_a_run_into_a_bucket_through_the_flow_resumes_there(
    tmp_path: Path, curate_here, s3: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`curate run --out s3://...`: the run files land in the bucket (stats.json, report), the
    checkpoints too; the same command on a machine without the staging folder restores them."""
    from curation.core.mirror import STAGING_ENV
    from curation.core.storage import RemotePath

    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "staging"))
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"document number {i} has enough words to stay"}) + "\n" for i in range(6))
                    + json.dumps({"text": "document number 0 has enough words to stay"}) + "\n")
    config = write_config(tmp_path, {"inputs": [{"path": str(data)}], "dedup": {"exact": {}}})
    url = f"{s3}/runs/r1"
    done = curate_here("run", str(config), "--out", url, "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"-> {url}/" in done.stdout and f"report: {url}/report.html" in done.stdout
    remote = RemotePath(url)
    assert json.loads((remote / "stats.json").read_text())["totals"]["kept"] == 6
    assert sorted(p.name for p in (remote / ".checkpoints").iterdir()) == ["00-ingest", "01-dedup_exact"]
    shutil.rmtree(tmp_path / "staging")  # another machine
    with caplog.at_level("INFO", logger="curation.core.run"):
        again = curate_here("run", str(config), "--out", url, "--no-progress")
    assert again.returncode == 0 and "kept 6 of 7" in again.stdout, again.stderr[-3000:]
    assert "dedup_exact: restored from" in caplog.text
