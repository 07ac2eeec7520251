"""How a `curate` process ends, the Prefect side: a Prefect API that stops answering, the embedded
Prefect server, and Prefect's tracebacks of the endings curation/core/ending.py turns into one
message (a signal, a disk that refuses a write, the API gone: recognised there).

- The Prefect API stops answering: the client retries briefly (PREFECT_CLIENT_MAX_RETRIES 2,
  PREFECT_API_REQUEST_TIMEOUT 20 s unless set), then one line, exit 5, saying whether a version
  was published before.
- The embedded server (no PREFECT_API_URL): started in its own session, so a Ctrl-C to the
  terminal's process group is this process's to handle (it stops the server on the way out),
  and told by the kernel to stop when this process dies, kill -9 included (Linux).
"""

from __future__ import annotations

import logging
import os
import sys
from functools import partial
from types import SimpleNamespace

from curation.core.ending import api_unreachable, die_with_parent, disk_refusal

EXIT_API = 5  # the Prefect API stopped answering
PREFECT_DEFAULTS = {  # set unless the user set them, before Prefect reads its settings
    # Bounded retries: a Prefect API that is gone is said so in seconds, not minutes
    # (Prefect's defaults: 5 retries with 2-32 s back-off, 60 s per request).
    "PREFECT_CLIENT_MAX_RETRIES": "2",
    "PREFECT_API_REQUEST_TIMEOUT": "20",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # the embedded server takes 15-25 s here
    # Offline by design; its start-up write also races the embedded server's SQLite database.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "curation",  # the stages log through `curation.*`: show them in Prefect
}


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


def prefect_defaults() -> None:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "the embedded server"


# --- the embedded Prefect server ----------------------------------------------------------------------


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
                popen = partial(popen, preexec_fn=partial(die_with_parent, os.getpid()))
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
