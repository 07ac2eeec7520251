"""The Prefect side of `curate`: artifacts, per-stage caching and resume, and a served schedule.

Every flow runs through the CLI against the session's real Prefect server: in this process
(`curate_here`), or as a `python -m flows.cli` process where the process matters (killed
mid-run, serving a schedule); the assertions read that server through the Prefect client.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from openai_server import FakeOpenAI, rating_reply
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort, TaskRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings

REPO = Path(__file__).resolve().parents[1]


def api(server: dict[str, str], query):
    async def main():
        async with get_client() as client:
            return await query(client)

    with temporary_settings(updates={PREFECT_API_URL: server["PREFECT_API_URL"]}):
        return asyncio.run(main())


def curate_runs(server: dict[str, str], out: Path) -> list:
    """The curate flow runs that wrote `out`, oldest first."""
    async def query(client):
        # Explicit sort and limit: this server version rejects the client's null defaults.
        return await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["curate"])), sort=FlowRunSort.START_TIME_DESC, limit=200
        )

    runs = [r for r in api(server, query) if r.parameters.get("out_dir") == str(out)]
    return sorted(runs, key=lambda r: r.start_time)


def task_states(server: dict[str, str], flow_run_id) -> dict[str, str]:
    """Task name (without Prefect's suffix) -> state name, for one flow run."""
    async def query(client):
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=100,
        )

    return {t.name.rsplit("-", 1)[0]: t.state.name for t in api(server, query)}


def artifacts(server: dict[str, str], flow_run_id) -> dict:
    """Key -> the latest artifact of that key published by one flow run."""
    async def query(client):
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            flow_run_filter=FlowRunFilter(),  # explicit: this server rejects null filters too
            task_run_filter=TaskRunFilter(),
            sort=ArtifactSort.CREATED_DESC,
            limit=100,
        )

    return {a.key: a for a in reversed(api(server, query))}


def sft_rows(n: int, quality: tuple[int, ...] = (4, 2)) -> list[dict]:
    """Distinct question/answer rows (pseudo-random words), each marked with the score it deserves."""
    def words(*seed: object, k: int = 10) -> str:
        return " ".join(hashlib.sha256(f"{seed}-{j}".encode()).hexdigest()[:7] for j in range(k))

    return [
        {"instruction": f"Question {i}: explain {words(i, 'q', k=6)}.",
         "output": f"Answer {i}: {words(i, 'a')}. quality={quality[i % len(quality)]}"}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def small_corpus(folder: Path) -> list[dict]:
    """Two files: unique rows, exact copies across files, near copies and too-short rows."""
    folder.mkdir()
    rows = sft_rows(30)
    write_jsonl(folder / "a.jsonl", rows[:20])
    copies = [dict(r) for r in rows[:5]]  # exact duplicates of a.jsonl rows
    near = [{**r, "output": r["output"] + " Indeed"} for r in rows[5:8]]  # near duplicates
    short = [{"instruction": "Hi?", "output": "No."} for _ in range(2)]
    write_jsonl(folder / "b.jsonl", rows[20:] + copies + near + short)
    return [{"path": str(folder / "*.jsonl")}]


CHEAP_STAGES = {
    "filters": {"length": {"min_words": 3}},
    "dedup": {"exact": {}, "minhash": {"threshold": 0.7, "num_perm": 64, "ngram": 3}},
}


def test_a_killed_run_resumes_from_its_last_finished_stage(
    tmp_path: Path, openai_server: FakeOpenAI, prefect_server: dict[str, str], curate_here
) -> None:
    n = 40
    openai_server.latency = 0.15
    openai_server.handler = lambda body: rating_reply(body, 4 if "quality=4" in body["messages"][-1]["content"] else 2)
    judge = {"endpoint": {"base_url": openai_server.base_url, "model": "judge", "max_retries": 2, "timeout": 5,
                          "max_concurrency": 2}}
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump({
        "inputs": [{"path": str(write_jsonl(tmp_path / "sft.jsonl", sft_rows(n) + sft_rows(4)))}],  # 4 exact copies
        **CHEAP_STAGES,
        "jury": {"judges": [{"name": "a", "rubric": "geval_plain", "model": judge}],
                 "cache_dir": str(tmp_path / "cache"), "min_score": 3},
        "export": {"formats": ["alpaca", "openai"], "test_size": 0.1},
        "execution": {"batch_size": 10},  # the corpus in shards of 10 records: each checkpoint holds several
    }))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "flows.cli", "run", str(config), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(command, cwd=REPO, env={**os.environ, **prefect_server},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while openai_server.call_count < 12 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert openai_server.call_count < n, "the run finished before it could be killed"
    with sqlite3.connect(tmp_path / "cache" / "llm_cache.sqlite") as db:  # answers are committed as they come
        cached = db.execute("SELECT count(*) FROM answers").fetchone()[0]
    assert cached >= 10
    before = openai_server.call_count
    checkpoints = out / ".checkpoints"
    finished = sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith("."))
    assert finished == ["00-ingest", "01-filters", "02-dedup_exact", "03-dedup_minhash"]
    assert len(list((checkpoints / "00-ingest" / "records").glob("part-*.parquet"))) == 5  # 44 records
    written = {name: (checkpoints / name / "records" / "part-000000.parquet").stat().st_mtime_ns for name in finished}

    resumed = curate_here("run", str(config), "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (checkpoints / ".scratch").exists()  # a finished run leaves no half-written corpora
    assert openai_server.call_count - before == n - cached  # the jury asked only for what its cache lacked
    assert written == {
        name: (checkpoints / name / "records" / "part-000000.parquet").stat().st_mtime_ns for name in finished
    }
    run = curate_runs(prefect_server, out)[-1]
    states = task_states(prefect_server, run.id)
    assert [states[s] for s in ("ingest", "filters", "dedup_exact", "dedup_minhash")] == ["Cached"] * 4
    assert states["jury"] == states["export"] == "Completed"
    found = artifacts(prefect_server, run.id)
    assert found["curate-resume-jury-progress"].data == 100.0
    scores = {row["score"]: row["records"] for row in json.loads(found["curate-resume-jury-scores"].data)}
    assert scores == {"1": 0, "2": n // 2, "3": 0, "4": n // 2, "5": 0, "unscored": 0}

    # An uninterrupted run (its jury answers come from the same answer cache) decides the same.
    fresh = tmp_path / "fresh"
    done = curate_here("run", str(config), "--out", str(fresh), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("kept.parquet", "rejected.parquet"):
        a, b = (pl.read_parquet(d / name).sort("id") for d in (out, fresh))
        assert a.equals(b), name
    assert (out / "export" / "alpaca.json").read_bytes() == (fresh / "export" / "alpaca.json").read_bytes()
    assert json.loads((out / "stats.json").read_text())["totals"]["kept"] == n // 2

    # A restored export must have its files: one missing, and the export (only) runs again.
    (out / "export" / "alpaca.json").unlink()
    again = curate_here("run", str(config), "--out", str(out), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    states = task_states(prefect_server, curate_runs(prefect_server, out)[-1].id)
    assert states["jury"] == "Cached" and states["export"] == "Completed"
    assert (out / "export" / "alpaca.json").read_bytes() == (fresh / "export" / "alpaca.json").read_bytes()


def test_a_served_schedule_runs_the_flow_and_shows_its_stages_and_artifacts(
    tmp_path: Path, prefect_server: dict[str, str]
) -> None:
    config = tmp_path / "Served Check.yaml"  # the stem becomes the artifact keys: curate-served-check-*
    config.write_text(yaml.safe_dump({"inputs": small_corpus(tmp_path / "data"), **CHEAP_STAGES}))
    runs = tmp_path / "runs"
    log = (tmp_path / "serve.log").open("w")
    served = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", str(config), "--interval", "5", "--runs", str(runs)],
        cwd=REPO, env={**os.environ, **prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "2"},
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deployment = wait_for(lambda: read_deployment(prefect_server, "curate/served-check"), 120, served)
        assert deployment.schedules[0].schedule.interval.total_seconds() == 5
        assert deployment.parameters["config_path"] == str(config.resolve())
        assert deployment.parameters["out_dir"] == str(runs.resolve() / "Served Check-{time}")
        completed = wait_for(lambda: deployment_runs(prefect_server, deployment.id, StateType.COMPLETED), 240, served)
        assert completed, (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        served.send_signal(signal.SIGINT)
        try:
            served.wait(timeout=20)
        except subprocess.TimeoutExpired:
            served.kill()
            served.wait()
        log.close()
    # Stopped serving, its schedule is paused and the runs it booked ahead are gone (Prefect's
    # own pause on shutdown was cut short by the signal: they stayed, Late, a run every 5 s).
    assert read_deployment(prefect_server, "curate/served-check").paused
    assert not deployment_runs(prefect_server, deployment.id, StateType.SCHEDULED)
    written = [p for p in runs.glob("Served Check-*") if (p / "stats.json").is_file()]
    assert written and all(p.name != "Served Check-{time}" for p in written)
    assert len(written) >= len(completed)  # each its own folder, also runs started in the same second

    # The run shows its stages and artifacts in Prefect.
    run = completed[-1]
    stats = json.loads((written[0] / "stats.json").read_text())
    removed = stats["totals"]["removed_by_stage"]
    assert removed["filters"] == 2 and removed["dedup_exact"] == 5 and removed["dedup_minhash"] >= 1
    assert set(task_states(prefect_server, run.id)) >= {
        "ingest", "filters", "dedup_exact", "dedup_minhash", "write-run", "report", "artifacts",
    }
    found = artifacts(prefect_server, run.id)
    assert set(found) == {f"curate-served-check-{k}" for k in ("summary", "removals", "duplicates", "report")}
    assert "| dedup_exact | 38 | 33 | 5 | exact_duplicate 5 |" in found["curate-served-check-summary"].data
    removals = json.loads(found["curate-served-check-removals"].data)
    assert {"stage": "dedup_exact", "reason": "exact_duplicate", "count": 5} in removals
    clusters = json.loads(found["curate-served-check-duplicates"].data)
    assert clusters[0]["size"] == 2 and clusters[0]["excerpt"].startswith("Question ")
    assert any((p / "report.html").resolve().as_uri() in found["curate-served-check-report"].data for p in written)


def test_runs_that_start_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    from curation.core.rundirs import expand_out_dir

    pattern = str(tmp_path / "runs" / "demo-{time}")
    first, second = (expand_out_dir(pattern, lambda: "20260101-030000") for _ in range(2))
    assert first.is_dir() and second.is_dir() and first.name == "demo-20260101-030000" and second.name == f"{first.name}-2"
    assert expand_out_dir(str(tmp_path / "fixed"), lambda: "unused") == tmp_path / "fixed"


def wait_for(probe, seconds: float, process: subprocess.Popen):
    """Poll `probe` until it returns something truthy, the time is up or `process` exits."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found or time.monotonic() > deadline or process.poll() is not None:
            return found
        time.sleep(1)


def read_deployment(server: dict[str, str], name: str):
    async def query(client):
        try:
            return await client.read_deployment_by_name(name)
        except Exception:  # noqa: BLE001 - not registered yet
            return None

    return api(server, query)


def deployment_runs(server: dict[str, str], deployment_id, state: StateType | None = None) -> list:
    # The scheduler books many future runs (no start time yet): filter, do not sort them away.
    states = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])))

    async def query(client):
        return await client.read_flow_runs(
            flow_run_filter=states if state else None,
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=20,
        )

    return api(server, query)


def test_a_refresh_publishes_a_new_version_deduped_against_the_old(tmp_path: Path, curate_here) -> None:
    data = tmp_path / "data"
    data.mkdir()
    first = [
        {"instruction": f"Explain topic number {i} in detail please.",
         "output": f"Topic {i} is explained here with care and words."}
        for i in range(12)
    ]
    (data / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first))
    config = tmp_path / "refresh.yaml"
    config.write_text(yaml.safe_dump({
        "inputs": [{"path": "data"}],
        "dedup": {"exact": {}, "minhash": {"threshold": 0.7}},
        "publish": {"dir": "published"},
    }))
    done = curate_here("run", str(config), "--out", str(tmp_path / "run1"), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    published = tmp_path / "published"
    assert (published / "LATEST").read_text().strip() == "v0001"
    v1 = (published / "v0001" / "kept.parquet").read_bytes()

    # New file: two exact copies of published records, one new record, one copy inside itself.
    new = [first[0], first[5], {"instruction": "A brand new question?", "output": "A brand new answer."}]
    (data / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*new, new[2]]))
    done = curate_here("run", str(config), "--out", str(tmp_path / "run2"), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (published / "LATEST").read_text().strip() == "v0002"
    assert (published / "v0001" / "kept.parquet").read_bytes() == v1  # nothing earlier is lost
    stats = json.loads((tmp_path / "run2" / "stats.json").read_text())
    assert stats["totals"]["ingested"] == 4  # only the new file
    rejected = pl.read_parquet(tmp_path / "run2" / "rejected.parquet")
    assert sorted(rejected["reason"].to_list()) == ["duplicate_of_published", "duplicate_of_published", "exact_duplicate"]
    v2 = pl.read_parquet(published / "v0002" / "kept.parquet")
    assert v2.height == 13
    diff = json.loads((tmp_path / "run2" / "publish.json").read_text())
    assert len(diff["added"]) == 1 and diff["removed"] == [] and diff["version"] == 2
    report = (tmp_path / "run2" / "report.html").read_text()
    assert "Version 2 (parent: version 1)" in report and diff["added"][0] in report

    # Nothing new: nothing to do, no version 3.
    done = curate_here("run", str(config), "--out", str(tmp_path / "run3"), "--no-progress")
    assert done.returncode == 0 and "no new inputs" in done.stdout
    assert "report:" not in done.stdout and not (tmp_path / "run3").exists()  # no report, so none named
    assert (published / "LATEST").read_text().strip() == "v0002"


def jury_config(tmp_path: Path, server: FakeOpenAI, n: int = 40, **extra) -> Path:
    """A config whose jury asks `server` once per record (slow enough to be stopped midway)."""
    server.latency = 0.15
    server.handler = lambda body: rating_reply(body, 4)
    judge = {"endpoint": {"base_url": server.base_url, "model": "judge", "max_retries": 2, "timeout": 5,
                          "max_concurrency": 2}}
    config = tmp_path / "stop.yaml"
    config.write_text(yaml.safe_dump({
        "inputs": [{"path": str(write_jsonl(tmp_path / "sft.jsonl", sft_rows(n)))}],
        **CHEAP_STAGES,
        "jury": {"judges": [{"name": "a", "rubric": "geval_plain", "model": judge}], "cache_dir": str(tmp_path / "cache")},
        **extra,
    }))
    return config


def curate_process(args: list[str], env: dict[str, str | None], log: Path, group: bool = False) -> subprocess.Popen:
    """`python -m flows.cli ARGS`, its output in `log`; a None in `env` unsets that variable;
    `group`: in a process group of its own (as a terminal starts it). SIGINT restored: a test run
    from a background job would hand the process an ignored SIGINT, which Python (and curate) keep."""
    merged = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=merged, stdout=log.open("w"),
        stderr=subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=group,
    )


def wait_for_calls(server: FakeOpenAI, calls: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while server.call_count < calls and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None and server.call_count >= calls, "the run ended before it could be stopped"


def curate_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("curate")]


def test_sigint_to_the_run_process_alone_stops_it_before_publishing_and_the_rerun_resumes(
    tmp_path: Path, openai_server: FakeOpenAI, prefect_server: dict[str, str], curate_here
) -> None:
    published, out, log = tmp_path / "published", tmp_path / "run", tmp_path / "output.txt"
    config = jury_config(tmp_path, openai_server, publish={"dir": str(published)})
    run = curate_process(["run", str(config), "--out", str(out), "--no-progress"], prefect_server, log)
    wait_for_calls(openai_server, 6, run)
    run.send_signal(signal.SIGINT)  # to the process alone (`kill -INT PID`), not to its group
    assert run.wait(timeout=60) == 130
    output = log.read_text()
    assert curate_lines(output) == ["curate: interrupted by SIGINT; nothing was published"], output[-3000:]
    assert "Traceback" not in output and "Exception ignored" not in output
    assert openai_server.call_count < 40  # stopped in the jury, not after it
    assert not (published / "LATEST").exists() and not list(published.glob("v*"))
    assert "stopped by SIGINT; the last finished step: dedup_minhash" in (out / "INTERRUPTED").read_text()
    assert not (out / "stats.json").exists()

    done = curate_here("run", str(config), "--out", str(out), "--no-progress")  # resumes, publishes, unmarks
    assert done.returncode == 0, done.stderr[-3000:]
    assert (published / "LATEST").read_text().strip() == "v0001" and not (out / "INTERRUPTED").exists()
    totals = json.loads((out / "stats.json").read_text())["totals"]
    assert totals["ingested"] == totals["kept"] + totals["rejected"] == 40


def flow_run_processes(server_pid: int) -> list[int]:
    """The flow-run processes a served deployment started (Prefect spawns one per run)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == server_pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_served_schedule_runs_one_refresh_at_a_time_and_skips_the_ticks_in_between(
    tmp_path: Path, prefect_server: dict[str, str]
) -> None:
    config = tmp_path / "tick.yaml"
    published, runs, log = tmp_path / "published", tmp_path / "runs", tmp_path / "serve.log"
    config.write_text(yaml.safe_dump({"inputs": small_corpus(tmp_path / "data"), **CHEAP_STAGES,
                                      "publish": {"dir": str(published)}}))
    published.mkdir()
    lock = os.open(published / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # another refresh is publishing: the served run has to wait for it
    served = curate_process(["serve", str(config), "--interval", "1", "--runs", str(runs)],
                            {**prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}, log)
    try:
        assert wait_for(lambda: "waiting for it to finish" in log.read_text(), 120, served), log.read_text()[-3000:]
        deployment = read_deployment(prefect_server, "curate/tick")
        processes = []
        for _ in range(20):  # ticks every second while the one run waits
            processes.append(len(flow_run_processes(served.pid)))
            time.sleep(0.2)
        assert max(processes) == 1, processes
        assert len(deployment_runs(prefect_server, deployment.id, StateType.CANCELLED)) >= 2  # the ticks skipped
        os.close(lock)  # the other refresh is done: the waiting run publishes
        assert wait_for(lambda: deployment_runs(prefect_server, deployment.id, StateType.COMPLETED), 120, served)
    finally:
        served.send_signal(signal.SIGINT)
        try:
            code = served.wait(timeout=60)
        except subprocess.TimeoutExpired:
            served.kill()
            code = served.wait()
    output = log.read_text()
    assert "at most 1 run at a time; a tick while one runs is skipped" in output
    assert code == 130 and curate_lines(output)[-1] == "curate: interrupted by SIGINT: stopped serving", output[-3000:]
    assert read_deployment(prefect_server, "curate/tick").paused  # no runs booked every second after it
    assert (published / "LATEST").read_text().strip() == "v0001"
    # Ticks that found nothing new (or were stopped before any work) leave no folder behind.
    folders = list(runs.iterdir())
    assert folders and all((f / "stats.json").is_file() or (f / "INTERRUPTED").is_file() for f in folders), folders
    assert sum((f / "stats.json").is_file() for f in folders) == 1


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 512 KiB tmpfs: a disk that fills up. Mounting needs root (CAP_SYS_ADMIN): skipped otherwise."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip() or 'mount failed'}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> None:
    with (disk / "filler").open("ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:  # full
            pass


def test_a_full_disk_stops_the_run_with_one_message_and_the_previous_version_intact(
    tmp_path: Path, small_disk: Path, prefect_server: dict[str, str], curate_here
) -> None:
    data, published = tmp_path / "data", small_disk / "published"
    data.mkdir()
    write_jsonl(data / "a.jsonl", sft_rows(12))
    config = tmp_path / "full.yaml"
    config.write_text(yaml.safe_dump({"inputs": [{"path": str(data)}], "dedup": {"exact": {}},
                                      "publish": {"dir": str(published)}}))
    done = curate_here("run", str(config), "--out", str(tmp_path / "run1"), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    v1 = (published / "v0001" / "kept.parquet").read_bytes()
    fill(small_disk)
    write_jsonl(data / "b.jsonl", sft_rows(40)[20:])

    # publish.dir full: the run's work is done, the new version cannot be written.
    log = tmp_path / "output.txt"
    run = curate_process(["run", str(config), "--out", str(tmp_path / "run2"), "--no-progress"], prefect_server, log)
    assert run.wait(timeout=120) == 4
    output = log.read_text()
    assert curate_lines(output) == [f"curate: stopped: cannot write in {published}: No space left on device"], output[-3000:]
    assert "Traceback" not in output
    assert (published / "LATEST").read_text().strip() == "v0001" and (published / "v0001" / "kept.parquet").read_bytes() == v1
    assert sorted(p.name for p in published.iterdir() if not p.name.startswith(".lock")) == ["LATEST", "v0001"]
    totals = json.loads((tmp_path / "run2" / "stats.json").read_text())["totals"]
    assert totals["ingested"] == totals["kept"] + totals["rejected"] == 20  # every row accounted for, none published

    # --out full: the first write stops the run, naming the folder.
    out = small_disk / "run3"
    done = curate_here("run", str(config), "--out", str(out), "--no-progress")
    assert done.returncode == 4
    assert curate_lines(done.stderr) == [f"curate: stopped: cannot write in {out}: No space left on device"]
    assert (published / "LATEST").read_text().strip() == "v0001"


def children(pid: int, marker: bytes) -> list[int]:
    """Processes whose parent is `pid` and whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_on_the_embedded_server(
    tmp_path: Path, server: FakeOpenAI, env: dict[str, str] | None = None, **extra
) -> tuple[subprocess.Popen, Path]:
    """`curate run` without PREFECT_API_URL (Prefect starts its embedded server), judging 200
    records (~15 s of jury to be stopped in): (the process, its output file)."""
    env = {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": None, **(env or {})}
    log = tmp_path / "output.txt"
    config = jury_config(tmp_path, server, n=200, **extra)
    return curate_process(["run", str(config), "--out", str(tmp_path / "run"), "--no-progress"], env, log, group=True), log


@pytest.mark.slow
def test_the_embedded_server_ends_with_the_command_and_a_lost_one_ends_the_run(tmp_path: Path) -> None:
    """Three commands on embedded servers at once (a server's start is most of each one's time).
    SIGTERM to one's process group and kill -9 to another take their servers with them (the server
    is in a session of its own; after kill -9 the kernel tells it: PR_SET_PDEATHSIG). The third
    loses its server mid-run: the work needs no API, so it publishes, then ends with one line, exit 5.
    Its client retries once, not curate's default twice (a user's setting is kept): each call to the
    dead API (the jury's progress, the artifacts, the flow's end) waits out 2 + 4 s of back-off
    otherwise, ~30 s of this test; one retry still bridges a blip of the loaded server before the kill."""
    published = tmp_path / "api" / "published"
    cases = {"term": {}, "kill": {},
             "api": {"publish": {"dir": str(published)}, "env": {"PREFECT_CLIENT_MAX_RETRIES": "1"}}}
    servers = {name: FakeOpenAI().__enter__() for name in cases}
    try:
        started = {}
        for name, extra in cases.items():
            (tmp_path / name).mkdir()
            started[name] = start_on_the_embedded_server(tmp_path / name, servers[name], **extra)
        embedded = {}
        for name, (run, _) in started.items():  # each stopped in its jury, as soon as it gets there
            wait_for_calls(servers[name], 6, run)
            (embedded[name],) = children(run.pid, b"prefect.server.api.server:create_app")
            if name == "api":
                os.kill(embedded[name], signal.SIGKILL)  # the API is gone mid-run
                servers[name].latency = 0  # the rest of its jury (kept slow to be stopped in) at once
            else:
                os.killpg(run.pid, signal.SIGTERM if name == "term" else signal.SIGKILL)
        codes = {name: run.wait(timeout=180) for name, (run, _) in started.items()}
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)
    deadline = time.monotonic() + 30
    while (alive(embedded["term"]) or alive(embedded["kill"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(embedded["term"]) and not alive(embedded["kill"]), "an embedded Prefect server outlived its command"

    output = started["term"][1].read_text()
    assert codes["term"] == 143, output[-3000:]
    assert curate_lines(output) == ["curate: interrupted by SIGTERM; nothing was published"], output[-3000:]
    assert "Traceback" not in output

    output = started["api"][1].read_text()
    assert codes["api"] == 5, output[-3000:]
    (line,) = curate_lines(output)
    assert line.startswith("curate: error: the Prefect API (the embedded server) stopped answering (")
    assert line.endswith(f"; version {published / 'v0001'} was published before") and "Traceback" not in output
    totals = json.loads((tmp_path / "api" / "run" / "stats.json").read_text())["totals"]
    assert totals["ingested"] == totals["kept"] + totals["rejected"] == 200


def test_a_signal_outside_the_work_is_kept_for_the_next_check_and_one_inside_raises_at_once() -> None:
    from curation.core import ending

    before = signal.getsignal(signal.SIGINT)
    with ending.signals():
        os.kill(os.getpid(), signal.SIGINT)  # not in the flow's work: noted, nothing raised here
        assert ending.received() == signal.SIGINT
        with pytest.raises(ending.Interrupted) as stopped:
            ending.check()  # where a swallowed interrupt is found again: before a step, before publishing
        assert stopped.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before  # put back: tests call the CLI's main in this process
    with ending.signals(), pytest.raises(ending.Interrupted):
        with ending.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted long before


def test_the_writes_a_full_disk_refuses_are_recognised_whatever_library_wrote(small_disk: Path) -> None:
    import numpy as np

    from curation.core import ending
    from schemas.base import StageFailed

    fill(small_disk)
    rows = pl.DataFrame({"a": [os.urandom(40).hex() for _ in range(5000)]})
    writes = [  # polars and numpy raise no OSError with an errno: their texts say it
        lambda: rows.write_parquet(small_disk / "a.parquet"),
        lambda: np.save(small_disk / "b.npy", np.ones(100_000)),
        lambda: (small_disk / "c.txt").write_text("x" * 100_000),
    ]
    for write in writes:
        with pytest.raises(StageFailed, match=f"cannot write in {small_disk}: .*No space left on device"):
            with ending.writing(small_disk):
                write()
    with pytest.raises(ValueError):  # anything else passes through untouched
        with ending.writing(small_disk):
            raise ValueError("not a disk problem")
