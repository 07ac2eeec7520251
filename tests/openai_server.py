"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted answers, for tests and benchmarks.

`FakeOpenAI` serves `POST /v1/chat/completions` and `GET /v1/models`, one thread per connection
(stdlib ThreadingHTTPServer, HTTP/1.1 keep-alive). What each request gets is decided by
`handler(body) -> Reply`; `latency` is added to every answer and at most `capacity` requests are
processed at once (the rest wait), so capacity / latency is the server's throughput ceiling.

    with FakeOpenAI(handler=fail_first(2, status=429)) as server:
        EndpointModel(Endpoint(base_url=server.base_url, model="m")).complete(requests)
        server.call_count, server.max_in_flight, server.calls[0]["messages"], server.headers[0]

The probe EndpointModel sends before its first request (see curation/llm/endpoint.py) goes to the
handler like any request but is counted apart: `calls` and `call_count` are the real requests,
`probes` the probe requests.

Handlers for common scripts: `echo` (the default), `fail_first`, `always_fail`, `slow`,
`unparsable`, `rating_handler` / `rating_reply` (a judge's answer in the format it asked for).
"""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from curation.llm.endpoint import PROBE_MESSAGES

# Small on purpose: the openai client honours retry-after-ms, so retry tests stay fast. (It
# ignores `retry-after: 0` and falls back to its own backoff of 0.5 s and up.)
QUICK_RETRY = {"retry-after-ms": "10"}
PROBE = [{"role": role, "content": content} for role, content in PROBE_MESSAGES]


@dataclass
class Reply:
    status: int = 200
    text: str | None = None  # the answer; for an error, its message
    logprobs: list[dict[str, float]] | None = None  # per generated position: {token: logprob}
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds on top of the server's latency
    prompt_tokens: int = 10
    completion_tokens: int = 5


Handler = Callable[[dict], Reply]


def prompt_of(body: dict) -> str:
    """The last message's content: what scripted handlers key on."""
    return body["messages"][-1]["content"]


def echo(body: dict) -> Reply:
    return Reply(text=f"echo: {prompt_of(body)}")


def fail_first(
    n: int, status: int = 429, match: str | None = None, then: Handler = echo, headers: dict | None = None
) -> Handler:
    """Fail the first `n` calls of every prompt (containing `match`, if given) with `status`."""
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def handler(body: dict) -> Reply:
        prompt = prompt_of(body)
        if match is None or match in prompt:
            with lock:
                seen[prompt] = seen.get(prompt, 0) + 1
                count = seen[prompt]
            if count <= n:
                return Reply(status=status, headers=QUICK_RETRY if headers is None else headers)
        return then(body)

    return handler


def always_fail(status: int = 500, match: str | None = None, then: Handler = echo) -> Handler:
    """Fail every call of the prompts containing `match` (all prompts when None)."""
    return fail_first(sys.maxsize, status, match, then)


def slow(seconds: float, match: str | None = None, then: Handler = echo) -> Handler:
    """Answer prompts containing `match` (all when None) only after `seconds`."""

    def handler(body: dict) -> Reply:
        reply = then(body)
        if match is None or match in prompt_of(body):
            reply.delay += seconds
        return reply

    return handler


def unparsable(body: dict) -> Reply:
    """A well-formed API answer whose text carries no rating."""
    return Reply(text="I would rather not put a number on this one.")


def rating_reply(body: dict, score: int, scale_max: int = 5) -> Reply:
    """Answer a judge request with `score` in the format it asked for.

    json_schema -> {"reason", "score"} JSON; logprobs -> the digit, with a first-position
    distribution of 0.7 on `score`, 0.25 on its neighbours and 0.05 on the rest of 1..scale_max
    (so a probability-weighted score is near, not exactly, `score`); else free text ending in
    "Rating: N".
    """
    if (body.get("response_format") or {}).get("type") == "json_schema":
        return Reply(text=json.dumps({"reason": "Clear and correct, with minor gaps.", "score": score}))
    if body.get("logprobs"):
        return Reply(text=str(score), logprobs=[_peaked(score, scale_max)], completion_tokens=1)
    return Reply(text=f"The answer addresses the question and is mostly accurate. Rating: {score}")


def rating_handler(score_of: Callable[[str], int], scale_max: int = 5) -> Handler:
    """Rate every request with `score_of(prompt text)`, in the format the request asked for."""
    return lambda body: rating_reply(body, score_of(prompt_of(body)), scale_max)


def _peaked(score: int, scale_max: int) -> dict[str, float]:
    neighbours = [k for k in (score - 1, score + 1) if 1 <= k <= scale_max]
    rest = [k for k in range(1, scale_max + 1) if k != score and k not in neighbours]
    weights = {score: 0.7}
    weights.update({k: 0.25 / len(neighbours) for k in neighbours})
    weights.update({k: 0.05 / len(rest) for k in rest})
    total = sum(weights.values())  # below 1 when a score has no neighbours or no rest
    return {str(k): math.log(w / total) for k, w in weights.items()}


class FakeOpenAI:
    def __init__(self, handler: Handler = echo, latency: float = 0.0, capacity: int = 64) -> None:
        self.handler = handler
        self.latency = latency
        self.capacity = capacity
        self._calls: list[dict] = []
        self._probes: list[dict] = []
        self._headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(capacity)
        self._in_flight = 0
        self._max_in_flight = 0
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> Self:
        self._server = _Server(("127.0.0.1", 0), _RequestHandler)
        self._server.fake = self
        # A short poll interval: shutdown() waits for one, and tests start many servers.
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use FakeOpenAI as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def calls(self) -> list[dict]:
        """Every chat-completions body received, in arrival order (retries included)."""
        with self._lock:
            return list(self._calls)

    @property
    def headers(self) -> list[dict[str, str]]:
        """The HTTP headers of each call, lower-cased names, parallel to `calls`."""
        with self._lock:
            return list(self._headers)

    @property
    def probes(self) -> list[dict]:
        """The probe requests received, in arrival order."""
        with self._lock:
            return list(self._probes)

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self._calls)

    @property
    def max_in_flight(self) -> int:
        """The most requests the server had received but not yet answered at one time."""
        with self._lock:
            return self._max_in_flight

    def answer(self, body: dict, headers: dict[str, str]) -> Reply:
        with self._lock:
            if body.get("messages") == PROBE:
                self._probes.append(body)
            else:
                self._calls.append(body)
                self._headers.append(headers)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            with self._slots:  # beyond capacity a request waits, as on a saturated server
                reply = self.handler(body)
                time.sleep(self.latency + reply.delay)
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 refuses bursts of new connections
    fake: FakeOpenAI


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections
    wbufsize = 1 << 16  # headers and body leave in one send (flushed after each request)
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and benchmarks send thousands of requests

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self._send(404, _error(404, f"no route {self.path}"))
        self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "tests"}]})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, _error(404, f"no route {self.path}"))
        try:
            body = json.loads(raw)
        except ValueError:
            return self._send(400, _error(400, "request body is not JSON"))
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.fake.answer(body, headers)
        if reply.status != 200:
            return self._send(reply.status, _error(reply.status, reply.text), reply.headers)
        self._send(200, _completion(body, reply), reply.headers)

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer


def _error(status: int, message: str | None) -> dict:
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_exceeded"}
    return {
        "error": {
            "message": message or f"scripted error {status}",
            "type": kind.get(status, "server_error"),
            "param": None,
            "code": None,
        }
    }


def _completion(body: dict, reply: Reply) -> dict:
    logprobs = None
    if reply.logprobs is not None:
        logprobs = {"content": [_position(top, body.get("top_logprobs")) for top in reply.logprobs], "refusal": None}
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "logprobs": logprobs,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def _position(top: dict[str, float], top_n: int | None) -> dict:
    """One generated position: the likeliest token, and the top_n alternatives as asked."""
    ranked = sorted(top.items(), key=lambda item: -item[1])[: top_n or len(top)]
    token, logprob = ranked[0]
    alternatives = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in ranked]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alternatives}
