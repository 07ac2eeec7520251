"""How a `curate` process ends, in one place: signals, a disk that refuses a write, a Prefect API
that stops answering, and the embedded Prefect server.

- SIGINT / SIGTERM: inside the curate flow's work the handler raises `Interrupted` at once; where
  something swallows it (an `__del__`, a library's `except BaseException`) the flag it set stops
  the flow at the next step, and always before publishing. Exit 130 (SIGINT) or 143 (SIGTERM),
  one line. A second signal exits at once.
- A write the disk refuses (full, over quota, read-only, no permission): the step that wrote
  stops with one line naming the folder and the error (StageFailed, exit 4); nothing is
  published and the previous version stays as it was.
- The Prefect API stops answering: the client retries briefly (PREFECT_CLIENT_MAX_RETRIES 2,
  PREFECT_API_REQUEST_TIMEOUT 20 s unless set), then one line, exit 5, saying whether a version
  was published before.
- The embedded server (no PREFECT_API_URL): started in its own session, so a Ctrl-C to the
  terminal's process group is this process's to handle (it stops the server on the way out),
  and told by the kernel to stop when this process dies, kill -9 included (Linux).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace

from schemas.base import StageFailed

EXIT_API = 5  # the Prefect API stopped answering
INTERRUPTED = "INTERRUPTED"  # the marker an interrupted run leaves in its run directory
API_DEFAULTS = {"PREFECT_CLIENT_MAX_RETRIES": "2", "PREFECT_API_REQUEST_TIMEOUT": "20"}
# Errors of a disk that refuses a write. Libraries that do not raise OSError with an errno (polars,
# numpy) are recognised by their text: "... (os error 28)", "1000 requested and 512 written".
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}
_DISK_TEXTS = {f"(os error {code})": os.strerror(code) for code in _DISK_ERRNOS}
_SHORT_WRITE = " written"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the run stops, publishing nothing."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    received: int | None = None  # the first signal
    installed = False
    armed = 0  # > 0: inside the flow's work, where the handler may raise at once
    published: Path | None = None  # the version this process published, for the closing message


_state = _State()


def _on_signal(signum: int, frame: object) -> None:
    if _state.received is not None:  # asked twice: stop now (the embedded server dies with us)
        print(f"curate: {signal.Signals(signum).name} again: exiting now", file=sys.stderr)
        os._exit(128 + signum)
    _state.received = signum
    if _state.armed:
        raise Interrupted(signum)


@contextmanager
def signals() -> Iterator[None]:
    """SIGINT and SIGTERM handled as above while the block runs (main thread only); the
    previous handlers and a clean state afterwards (tests call `main` in their own process)."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    # A SIGINT ignored from the start (a background job of a script, nohup) stays ignored, as Python does.
    wanted = [sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, _on_signal) for sig in wanted}
    _state.installed, _state.received, _state.published = True, None, None
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.installed = False


@contextmanager
def interruptible() -> Iterator[None]:
    """The flow's work: a signal raises `Interrupted` here at once. Installs the handlers where
    no CLI did (a served run's own process)."""
    with signals():
        _state.armed += 1
        try:
            check()
            yield
        finally:
            _state.armed -= 1


def check() -> None:
    """Raise `Interrupted` if a signal arrived (one that was swallowed where it landed, too)."""
    if _state.received is not None:
        raise Interrupted(_state.received)


def interrupted_by(exc: BaseException) -> int:
    """The signal behind an interrupt that reached the flow: ours, or Prefect's TerminationSignal
    (its own SIGTERM handler, while a flow runs), recorded as if our handler had seen it."""
    signum = exc.signum if isinstance(exc, Interrupted) else int(getattr(exc, "signal", signal.SIGINT))
    if _state.received is None:
        _state.received = signum
    return signum


def received() -> int | None:
    return _state.received


def note_published(version: Path) -> None:
    _state.published = Path(version)


def published_note() -> str:
    return f"; version {_state.published} was published before" if _state.published else "; nothing was published"


def mark_interrupted(run_dir: Path, signum: int, last_step: str | None) -> bool:
    """Leave INTERRUPTED in a run directory a signal stopped, unless it is empty (nothing to keep
    then: a served run that was waiting for its turn). A rerun into it resumes and removes it."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return False
    done = f"the last finished step: {last_step}" if last_step else "no step finished"
    (run_dir / INTERRUPTED).write_text(f"stopped by {signal.Signals(signum).name}; {done}{published_note()}\n")
    return True


# --- a disk that refuses a write ------------------------------------------------------------------


def disk_refusal(exc: BaseException) -> str | None:
    """The error text if `exc` (or what caused it) is the disk refusing a write, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_ERRNOS:
            return f"{seen.filename}: {seen.strerror}" if seen.filename else str(seen.strerror)
        text = str(seen)
        for code, meaning in _DISK_TEXTS.items():
            if code in text:
                return meaning
        if isinstance(seen, OSError) and seen.errno is None and text.endswith(_SHORT_WRITE):  # numpy's short write
            return f"{os.strerror(errno.ENOSPC)} ({text})"
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


@contextmanager
def writing(folder: str | Path) -> Iterator[None]:
    """A write the disk refuses becomes StageFailed naming `folder`: one message, exit 4."""
    try:
        yield
    except StageFailed:
        raise  # already said, by the step that stopped
    except Exception as exc:
        refusal = disk_refusal(exc)
        if refusal is None:
            raise
        raise StageFailed(f"cannot write in {folder}: {refusal}") from None


# --- what Prefect logs about them -----------------------------------------------------------------


def expected(exc: BaseException) -> bool:
    """An ending this module turns into one message: a signal, a refused write, the API gone."""
    from prefect.exceptions import TerminationSignal

    if isinstance(exc, (KeyboardInterrupt, TerminationSignal)):
        return True
    return disk_refusal(exc) is not None or api_unreachable(exc) is not None


class _NoTracebackForExpected(logging.Filter):
    """Prefect logs the exception that ends a task or flow with its traceback: for the endings
    above the line stays, the traceback goes (it would say nothing the one message does not)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (record.exc_info[1] is None or expected(record.exc_info[1])):
            record.exc_info, record.exc_text = None, None  # (None: Prefect asks for one outside any exception)
        return True


def quiet_expected_tracebacks() -> None:
    """Put the filter on every handler of Prefect's loggers (after Prefect set up its logging)."""
    quiet = _NoTracebackForExpected()
    names = ["", *(n for n in logging.Logger.manager.loggerDict if n.split(".")[0] == "prefect")]
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _NoTracebackForExpected) for f in handler.filters):
                handler.addFilter(quiet)


# --- the Prefect API --------------------------------------------------------------------------------


def api_defaults() -> None:
    """Bounded retries: a Prefect API that is gone is said so in seconds, not minutes
    (Prefect's defaults: 5 retries with 2-32 s back-off, 60 s per request)."""
    for name, value in API_DEFAULTS.items():
        os.environ.setdefault(name, value)


def api_unreachable(exc: BaseException) -> str | None:
    """What went wrong if `exc` (or its cause) is the Prefect API not answering (refused, timed
    out, cut off), else None."""
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (httpx.TransportError, ConnectionError)):
            return str(seen) or type(seen).__name__
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "the embedded server"


# --- the embedded Prefect server ----------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """In the server's process before it starts: the kernel sends it SIGTERM when this
    process ends, however it ends (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def watch_embedded_server() -> None:
    """Without PREFECT_API_URL, Prefect starts a server of its own on first use (and stops it
    when this process exits normally): make it the one described above."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    import subprocess

    from prefect.server.api import server as prefect_server

    class WatchedServer(prefect_server.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect builds the command line; only the way it is started changes, in this call only.
            popen = partial(subprocess.Popen, start_new_session=True)
            if sys.platform == "linux":
                popen = partial(popen, preexec_fn=partial(_die_with_parent, os.getpid()))
            module_subprocess = prefect_server.subprocess
            prefect_server.subprocess = SimpleNamespace(Popen=popen)  # type: ignore[assignment]
            try:
                return super()._run_uvicorn_command()
            finally:
                prefect_server.subprocess = module_subprocess

    WatchedServer()  # Prefect keeps one server per port: registered first, this is the one it starts


def prepare_prefect() -> None:
    """Before a command runs a flow (after its checks): the embedded server watched, Prefect's
    logging set up and its tracebacks of the endings above left out."""
    import prefect.main  # noqa: F401 - sets up Prefect's logging

    watch_embedded_server()
    quiet_expected_tracebacks()


def exit_now(code: int) -> None:
    """Exit without the at-exit work: Prefect's workers would retry every queued log line and
    event against an API that is gone, for minutes. An embedded server stops with us (above)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
