"""Jury request throughput against an endpoint of known capacity, and the cached re-run speedup.

    cd /work/main && .venv/bin/python -m bench.bench_jury_throughput [--requests 2000] [--latency 0.05] [--capacity 16]

The endpoint is tests/openai_server.py's FakeOpenAI in its own spawned process (a real endpoint
is not in our process either, and this keeps its Python threads off our GIL): every answer takes
--latency seconds and at most --capacity are processed at once, so capacity / latency is the
most any client can get out of it (320 req/s by default) - in theory. What the server delivers on
this machine (its own Python threads share the 2 cores) is measured in the same run by a
reference client: raw HTTP/1.1 over keep-alive asyncio streams, prebuilt request bytes, no
parsing beyond Content-Length, `capacity` connections - about the least CPU a client can spend.
EndpointModel.complete sends
--requests judge requests (a rubric and a ~1,000-character record, json_schema output) with
max_concurrency = capacity; its throughput as a fraction of the reference client's is what our
client costs (target >= 0.9); the fraction of the theoretical ceiling is reported too. \
Then the same requests go through CachedModel (SQLite answer cache): a cold run
that stores every answer, and a warm re-run answered from the cache with no server call
(target: >= 100x faster than the cold run). CPU seconds (user + system, all threads) are the
client process's. Prints a summary and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Self

import orjson

from bench.measure import cpu_seconds
from curation.llm.cache import AnswerCache, CachedModel
from curation.llm.endpoint import EndpointModel
from curation.llm.types import ChatRequest, Completion
from schemas.jury import Endpoint

RESULTS = Path(__file__).resolve().parent / "results"
RUBRIC = (
    "Rate how helpful the assistant's answer is to the user, from 1 (useless or wrong) to 5 "
    "(complete, correct and clear). Judge only the answer; ignore its length. Reply with JSON: "
    '{"reason": one sentence, "score": an integer 1-5}.'
)
SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["reason", "score"],
    "additionalProperties": False,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per answer on the server")
    parser.add_argument("--capacity", type=int, default=16, help="answers the server processes at once")
    parser.add_argument("--max-concurrency", type=int, default=None, help="default: --capacity")
    args = parser.parse_args()
    if args.latency <= 0:
        parser.error("--latency must be above 0: the ceiling is capacity / latency")

    ceiling = args.capacity / args.latency
    requests = judge_requests(args.requests)
    load = [round(x, 2) for x in os.getloadavg()]
    with ServerProcess(args.latency, args.capacity) as server:
        reference = timed(lambda: reference_client(server.base_url, requests, args.capacity), server)
        cfg = Endpoint(base_url=server.base_url, model="judge", max_concurrency=args.max_concurrency or args.capacity)
        fresh = timed(lambda: EndpointModel(cfg).complete(requests), server)
        with tempfile.TemporaryDirectory() as folder:
            cold = timed(lambda: CachedModel(EndpointModel(cfg), AnswerCache(Path(folder))).complete(requests), server)
            warm = timed(lambda: CachedModel(EndpointModel(cfg), AnswerCache(Path(folder))).complete(requests), server)
    start = time.perf_counter()
    for request in requests:  # the cache key: part of every cached run's time
        request.key()
    key_seconds = time.perf_counter() - start
    result = {
        "requests": len(requests),
        "latency_s": args.latency,
        "capacity": args.capacity,
        "max_concurrency": cfg.max_concurrency,
        "ceiling_req_per_s": ceiling,
        "cpus": os.cpu_count(),
        "loadavg_before": load,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "reference_client": reference,
        "endpoint": fresh,
        "cached_cold": cold,
        "cached_warm": warm,
        "fraction_of_ceiling": fresh["req_per_s"] / ceiling,
        "fraction_of_reference": fresh["req_per_s"] / reference["req_per_s"],
        "cached_cold_fraction_of_ceiling": cold["req_per_s"] / ceiling,
        "warm_speedup_vs_cold": cold["seconds"] / warm["seconds"],
        "request_key_seconds": key_seconds,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"jury_throughput_{len(requests)}.json"
    out.write_text(json.dumps(result, indent=2))
    print(summary(result))
    print(f"\nwritten {out}")


def judge_requests(n: int) -> list[ChatRequest]:
    """n distinct judge prompts of realistic size (the cache key differs for each)."""
    answer = "To reverse a list in Python, call list.reverse() to do it in place, or use slicing. " * 12
    return [
        ChatRequest(
            messages=(("system", RUBRIC), ("user", f"Question {i}: how do I reverse a list?\n\nAnswer: {answer}")),
            json_schema=SCHEMA,
        )
        for i in range(n)
    ]


def reference_client(base_url: str, requests: list[ChatRequest], concurrency: int) -> list[Completion]:
    """The same requests as raw HTTP/1.1 on `concurrency` keep-alive connections: what the
    server can deliver to a client that costs next to nothing."""
    url = urllib.parse.urlsplit(base_url)
    bodies = [
        orjson.dumps({"model": "judge", "messages": [{"role": r, "content": c} for r, c in q.messages],
                      "response_format": {"type": "json_schema", "json_schema": {"name": "rating", "schema": q.json_schema}}})
        for q in requests
    ]
    head = f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
    wire = [f"{head}Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies]
    out: list[Completion] = [Completion(text=None)] * len(wire)
    pending = iter(range(len(wire)))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        for i in pending:
            writer.write(wire[i])
            headers = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", headers)
            if length is None:  # a chunked reply: this raw client reads sized bodies only
                raise RuntimeError(f"reply without Content-Length: {headers.decode(errors='replace')!r}")
            out[i] = Completion(text=(await reader.readexactly(int(length.group(1)))).decode())
        writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection() for _ in range(concurrency)))

    asyncio.run(run())
    return out


def timed(run: Callable[[], list[Completion]], server: ServerProcess) -> dict:
    before = server.stats()
    start, cpu = time.perf_counter(), cpu_seconds()
    out = run()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    after = server.stats()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "server_cpu_seconds": after["cpu_seconds"] - before["cpu_seconds"],
        "server_calls": after["calls"] - before["calls"],
        "req_per_s": len(out) / seconds,
        "answered": sum(c.text is not None for c in out),
        "from_cache": sum(c.cached for c in out),
    }


class ServerProcess:
    """FakeOpenAI in a spawned process; `stats()` asks it for its calls and CPU seconds so far."""

    def __init__(self, latency: float, capacity: int) -> None:
        self.latency, self.capacity = latency, capacity

    def __enter__(self) -> Self:
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(self.latency, self.capacity, child), daemon=True
        )
        self.process.start()
        self.base_url = self.conn.recv()
        return self

    def stats(self) -> dict:
        self.conn.send("stats")
        return self.conn.recv()

    def __exit__(self, *exc: object) -> None:
        self.conn.send("stop")
        self.process.join(timeout=10)


def _serve(latency: float, capacity: int, conn: Connection) -> None:
    from tests.openai_server import FakeOpenAI, rating_handler

    handler = rating_handler(lambda prompt: 1 + len(prompt) % 5)
    with FakeOpenAI(handler, latency=latency, capacity=capacity) as server:
        conn.send(server.base_url)
        while conn.recv() == "stats":
            conn.send({"calls": server.call_count, "cpu_seconds": cpu_seconds()})


def summary(r: dict) -> str:
    rows = [
        (
            f"endpoint: {r['capacity']} at once x {r['latency_s']} s per answer = {r['ceiling_req_per_s']:.0f}"
            f" req/s ceiling; client max_concurrency {r['max_concurrency']}; {r['requests']} judge requests"
        ),
        "",
        "| run | wall s | client CPU s | server CPU s | req/s | of ceiling | answered | from cache | server calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, key in (
        ("reference client (raw HTTP)", "reference_client"),
        ("EndpointModel", "endpoint"),
        ("CachedModel, cold", "cached_cold"),
        ("CachedModel, warm", "cached_warm"),
    ):
        m = r[key]
        rows.append(
            f"| {name} | {m['seconds']:.3f} | {m['cpu_seconds']:.2f} | {m['server_cpu_seconds']:.2f} |"
            f" {m['req_per_s']:,.0f} | {m['req_per_s'] / r['ceiling_req_per_s']:.2f} | {m['answered']} |"
            f" {m['from_cache']} | {m['server_calls']} |"
        )
    rows.append(
        f"\nthroughput: {r['fraction_of_reference']:.2f} of the reference client's (target >= 0.9),"
        f" {r['fraction_of_ceiling']:.2f} of the theoretical ceiling;"
        f" warm cached re-run {r['warm_speedup_vs_cold']:.0f}x faster than the cold run (target >= 100x);"
        f" load average {r['loadavg_before']} -> {r['loadavg_after']}"
        f"\nper request: client CPU {r['endpoint']['cpu_seconds'] / r['requests'] * 1e3:.2f} ms, server CPU"
        f" {r['endpoint']['server_cpu_seconds'] / r['requests'] * 1e3:.2f} ms; ChatRequest.key() for all requests:"
        f" {r['request_key_seconds']:.3f} s"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
