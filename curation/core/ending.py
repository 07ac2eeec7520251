"""How a curate run ends, apart from Prefect: a signal, a disk that refuses a write, an API gone.

- SIGINT / SIGTERM: inside the curate flow's work the handler raises `Interrupted` at once; where
  something swallows it (an `__del__`, a library's `except BaseException`) the flag it set stops
  the flow at the next step, and always before publishing. Exit 130 (SIGINT) or 143 (SIGTERM),
  one line. A second signal exits at once.
- A write the disk refuses (full, over quota, read-only, no permission): the step that wrote
  stops with one line naming the folder and the error (StageFailed, exit 4); nothing is
  published and the previous version stays as it was.

- An API that stops answering (the Prefect API): recognised here (`api_unreachable`), then one
  line and `exit_now`, skipping the at-exit work.
- A helper process (the embedded Prefect server) ends with this one, however this one ends
  (`die_with_parent`).

What Prefect adds (its client's retries, the embedded server, its logging): flows/lifecycle.py.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.base import StageFailed

if TYPE_CHECKING:
    from curation.core.storage import RemotePath

INTERRUPTED = "INTERRUPTED"  # the marker an interrupted run leaves in its run directory
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
    published: Path | RemotePath | None = None  # the version this process published, for the closing message


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


def note_published(version: Path | RemotePath) -> None:
    _state.published = version  # (a URL too: its text is what the message needs)


def published_note() -> str:
    return f"; version {_state.published} was published before" if _state.published else "; nothing was published"


def mark_interrupted(run_dir: Path, signum: int, last_step: str | None) -> str:
    """Leave INTERRUPTED in a run directory a signal stopped, unless it is empty (nothing to keep
    then: a served run that was waiting for its turn). A rerun into it resumes and removes it.
    Returns the run's closing line."""
    message = f"interrupted by {signal.Signals(signum).name}{published_note()}"
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return message
    done = f"the last finished step: {last_step}" if last_step else "no step finished"
    (run_dir / INTERRUPTED).write_text(f"stopped by {signal.Signals(signum).name}; {done}{published_note()}\n")
    return f"{message}; {run_dir} is marked {INTERRUPTED}"


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
def writing(folder: str | Path | RemotePath) -> Iterator[None]:
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


# --- an API that stops answering (the Prefect API: flows/lifecycle.py) -------------------------------


def api_unreachable(exc: BaseException) -> str | None:
    """What went wrong if `exc` (or its cause) is an API (Prefect's) not answering (refused, timed
    out, cut off), else None."""
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (httpx.TransportError, ConnectionError)):
            return str(seen) or type(seen).__name__
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def exit_now(code: int) -> None:
    """Exit without the at-exit work: Prefect's workers would retry every queued log line and
    event against an API that is gone, for minutes. An embedded server stops with us (flows/lifecycle.py)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def die_with_parent(parent: int) -> None:
    """In a child process before it starts its work: the kernel sends it SIGTERM when `parent`
    ends, however it ends, kill -9 included (prctl PR_SET_PDEATHSIG; Linux)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)
