"""Measuring a benchmark contender: wall and CPU seconds and peak memory, in a fresh process.

Peak memory is the growth of resident memory during the call (a 5 ms sampling thread, plus
ru_maxrss when it rose), which also counts polars' and torch's native allocations that
tracemalloc cannot see. A fresh spawned process per contender keeps the figures its own.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def measured(call: Callable[[], T]) -> tuple[T, float, float, float]:
    """call()'s result, wall seconds, CPU seconds and peak RSS growth in MB."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    before, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss())

    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start, cpu = time.perf_counter(), cpu_seconds()
    result = call()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    done.set()
    sampler.join()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    top = max(peak[0], maxrss if maxrss > maxrss_before else 0)
    return result, seconds, cpu, (top - before) / 2**20
