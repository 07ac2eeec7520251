"""Shared fixtures: real public data (tests/fixtures, ../shared/data) and one real Prefect server per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import prefect.main  # noqa: F401 - see below
import pytest
from openai_server import FakeOpenAI  # tests/ (no __init__.py) is on sys.path under pytest

REPO = Path(__file__).resolve().parents[1]
# Real files the repository may ship (tests/fixtures/README.md), in ../shared/data's layout.
PUBLIC_DATA = REPO / "tests" / "fixtures"
# Real files whose licence keeps them out of the repository (../shared/data/SOURCES.md: "tests only").
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA") or REPO.parent / "shared" / "data")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# xdist workers share the cores: each takes its share of torch / BLAS threads (commands the tests
# start inherit it). Two workers of two threads each on 2 cores oversubscribe them: a thread waits at
# every kernel's barrier for one not scheduled (the whole suite 507 s, one thread per worker 411 s).
# Set before torch or numpy is imported (neither is by the imports above).
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // int(workers))))
# Prefect binds its console log handler to sys.stderr when `prefect.main` is first imported
# (`import prefect` alone is lazy): imported above, at collection, it writes into pytest's
# session-wide capture, never into one test's capsys stream (closed when that test ends, which
# would turn every later Prefect log line into a logging error).


# A real server or cluster (seconds to start, minutes to use), or a model that is trained
# (`base`, the tiny Llama of tests/test_training.py: every test that trains or evaluates uses it).
SLOW_FIXTURES = {"prefect_server", "ray_cluster", "base"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs a real Prefect server, a Ray cluster or trains a model is slow, marked or not.

    The slow ones run first: with workers (scripts/test.sh runs pytest-xdist), the longest tests
    start at once instead of leaving one worker busy at the end while the other idles."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            # `ray stop` ends every Ray node of this user: one worker runs all the Ray tests.
            item.add_marker(pytest.mark.xdist_group("ray"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def public_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/fixtures through a link outside the working directory, as ../shared/data is: inputs
    are then shown by their absolute path (ingest shows a path under the working directory
    relative to it), the same whichever folder pytest runs in."""
    link = tmp_path_factory.mktemp("public") / "data"
    link.symlink_to(PUBLIC_DATA, target_is_directory=True)
    return link


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a test that cannot run here (its reason in the summary: pyproject's `-ra`), or fail it
    with CURATE_NO_SKIP=1, where a skip would pass the suite without the test."""
    if os.environ.get("CURATE_NO_SKIP", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason} (a failure, not a skip, with CURATE_NO_SKIP=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $CURATE_SHARED_DATA): for the tests that need a file the repository may not ship."""
    if not SHARED_DATA.is_dir():
        skip_or_fail(f"real data not found at {SHARED_DATA} (set CURATE_SHARED_DATA to its folder)")
    return SHARED_DATA


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 API (moto's server) on 127.0.0.1, a random port; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


S3_SECRET = "s3-test-secret-PLANTED-3f9a7c"


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A new empty bucket on the session's S3 server, reached as a user would: credentials and the
    endpoint in the environment (AWS_ENDPOINT_URL), none in any config. Yields `s3://<bucket>`."""
    from curation.core.storage import RemotePath, reset_filesystems

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "s3-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    reset_filesystems()  # a filesystem made under another test's environment is not reused
    bucket = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    bucket += f"-{os.getpid() % 10_000}-{int(time.monotonic() * 1000) % 100_000}"
    RemotePath(f"s3://{bucket}").fs.mkdir(bucket)
    yield f"s3://{bucket}"
    reset_filesystems()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[dict[str, str]]:
    """A real Prefect server on 127.0.0.1 with a project-local PREFECT_HOME.

    Yields the environment a subprocess needs to talk to it. Started once per session: it
    takes 15-25 s to come up on a 2-core machine.
    """
    # One per pytest-xdist worker ("gw0", ...): each worker's session starts its own server.
    home = REPO / ".prefect" / f"test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        # Runs of a newly served schedule are booked within a second, not the default five.
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            break
        except OSError as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"Prefect server did not start; see {home / 'server.log'}") from exc
            time.sleep(0.5)
    try:
        yield {k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    finally:
        # Its state is thrown away: a server still closing connections after 5 s is killed. (A full
        # run's last test on one worker took 20.2 s to tear down: likely the old 20 s wait run out.)
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture
def curate_here(prefect_server: dict[str, str], capsys: pytest.CaptureFixture) -> Callable[..., subprocess.CompletedProcess]:
    """`curate ARGS` run by the CLI's `main` in this process against the session's Prefect server:
    the same flows, tasks and server as a `python -m flows.cli` process, without a new
    interpreter's 7-14 s of imports. Tests of the process itself (signals, secrets in its
    output, the demo command) start the real process instead."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from flows.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        settings = {PREFECT_API_URL: prefect_server["PREFECT_API_URL"], PREFECT_HOME: prefect_server["PREFECT_HOME"]}
        with temporary_settings(updates=settings):
            try:
                code = main(list(args))
            finally:
                # Logs and events go to the server from background workers: deliver them now,
                # as a process does when it exits (Prefect's own test harness drains them too).
                APILogWorker.drain_all(at_exit=False)
                EventsWorker.drain_all(at_exit=False)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["curate", *args], code, out, err)

    return run


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI on 127.0.0.1; it echoes the last message until a test sets `.handler`."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A real local Ray cluster on 127.0.0.1: a head node and one worker node, one CPU each.

    Yields its address for `execution.address`. Started with the `ray` CLI of this venv, so
    workers import the project from the same environment. `ray stop` ends both nodes.
    """
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    # Ray's unix sockets live under --temp-dir, whose path must stay short (108 bytes).
    temp = Path(f"/tmp/ray-test-{os.getpid()}")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    # No token auth: a token file left in ~/.ray by another Ray user would turn it on for the
    # head only, and the worker and this driver would be refused.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # The nodes' own S3 credentials (as an instance role would give them): the driver sends none.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "AWS_ACCESS_KEY_ID": "ray-node-key",
           "AWS_SECRET_ACCESS_KEY": "ray-node-secret"}
    subprocess.run(
        [ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}", *common],
        check=True, env=env, capture_output=True, timeout=180,
    )
    try:
        subprocess.run(
            [ray_bin, "start", f"--address=127.0.0.1:{port}", *common],
            check=True, env=env, capture_output=True, timeout=180,
        )
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
