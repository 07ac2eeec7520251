"""Where per-partition work runs: in this process, or as tasks on a Ray cluster.

A stage with work that splits by rows (filter labels, exact-dedup keys, MinHash band keys,
embeddings) hands a function of a frame to `engine.map`. The local engine calls it once on the
whole frame (the function parallelises on threads itself); the Ray engine cuts the frame into
`execution.batch_size` partitions and runs one Ray task per partition on the cluster. Results come
back in partition order, so the stage's corpus-wide step (first occurrence, connected components,
k-means) sees the same input either way and a run keeps and rejects the same records on both
engines. Only that compact per-row output travels back, never a model or an index.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TypeVar

import polars as pl
from tqdm import tqdm

from schemas.base import ConfigError
from schemas.execution import ExecutionConfig

T = TypeVar("T")
log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address


class LocalEngine:
    name = "local"

    def map(self, fn: Callable[[pl.DataFrame], T], records: pl.DataFrame, desc: str | None = None) -> list[T]:
        """[fn(records)]: one partition, the whole frame."""
        return [fn(records)]

    def starts(self, rows: int) -> list[int]:
        """The first row of each partition `map` makes of a frame of `rows` rows."""
        return [0]


class RayEngine:
    """Ray tasks over row partitions. Connects on creation: a wrong address fails before any work."""

    name = "ray"

    def __init__(self, cfg: ExecutionConfig, progress: bool = True) -> None:
        try:
            import ray
        except ImportError as e:  # a dependency of the project; absent only in a broken install
            raise ConfigError("execution.engine: ray is not installed (run `bash scripts/setup.sh`)") from e
        self.batch_size = cfg.batch_size
        self.progress = progress
        self._ray = ray
        if not ray.is_initialized():
            _check_reachable(cfg.address)
            try:
                ray.init(
                    address=cfg.address,
                    num_cpus=cfg.num_cpus if cfg.address is None else None,
                    include_dashboard=False,
                    log_to_driver=False,
                    # Workers import this project from the driver's environment (same venv,
                    # same machine or image): nothing is uploaded.
                    runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}},
                )
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"execution.address: cannot reach Ray at {cfg.address!r}: {e}") from e
        resources = ray.cluster_resources()
        log.info("ray: %s CPUs on %s nodes", resources.get("CPU"), len(ray.nodes()))

    def starts(self, rows: int) -> list[int]:
        return list(range(0, rows, self.batch_size)) or [0]

    def map(self, fn: Callable[[pl.DataFrame], T], records: pl.DataFrame, desc: str | None = None) -> list[T]:
        """[fn(part) for part in partitions of batch_size rows], each a Ray task."""
        ray = self._ray
        task = ray.remote(_call)
        fn_ref = ray.put(fn)  # shipped once, not once per partition
        parts = [records.slice(lo, self.batch_size) for lo in self.starts(records.height)]
        pending = {task.remote(fn_ref, part): k for k, part in enumerate(parts)}
        results: list = [None] * len(parts)
        with tqdm(total=len(parts), desc=f"{desc} (ray)" if desc else "ray", disable=not self.progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    results[pending.pop(ref)] = ray.get(ref)
                    bar.update()
        return results


def _check_reachable(address: str | None) -> None:
    """Fail in seconds on a HOST:PORT nobody answers on: ray.init retries such an address for
    minutes. ("auto" and a local instance need no probe: Ray answers those at once.)"""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise ConfigError(f"execution.address: cannot reach Ray at {address!r}: {e}") from e


def _call(fn: Callable[[pl.DataFrame], T], part: pl.DataFrame) -> T:
    return fn(part)


Engine = LocalEngine | RayEngine


def open_engine(cfg: ExecutionConfig, progress: bool = True) -> Engine:
    return RayEngine(cfg, progress) if cfg.engine == "ray" else LocalEngine()
