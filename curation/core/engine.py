"""Where per-partition work runs: in this process, or as tasks on a Ray cluster.

A stage with work that splits by rows (filter labels, exact-dedup keys, MinHash band keys,
embeddings) hands a function of a frame to `engine.map`. The partitions are a corpus's shards
(curation/corpus.py), or, for an in-memory frame, the whole frame (local) or slices of
`execution.batch_size` rows (Ray). The local engine calls the function on one partition at a time
(it parallelises on threads itself); the Ray engine runs one Ray task per partition on the
cluster, a bounded number in flight so the driver never holds the corpus. Results come back in
partition order, so the stage's corpus-wide step (first occurrence, connected components,
the semantic search) sees the same input either way and a run keeps and rejects the same records on both
engines. Only that compact per-row output travels back, never a model or an index.

Corpus-wide steps that split into independent pieces use `engine.imap` on those pieces the same
way: MinHash groups each band's keys into candidate pairs.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import polars as pl
from tqdm import tqdm

from curation.core.corpus import Corpus, Source, shards
from curation.core.storage import storage_env
from schemas.base import ConfigError
from schemas.execution import ExecutionConfig

T = TypeVar("T")
X = TypeVar("X")
log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # workers never download models


class _Engine:
    # What a stage may adapt to without knowing which engine it has: whether fn runs in this
    # process (a progress bar of its own work shows; per-row state stays here) or in workers
    # (a batch worth a worker's model load is sent out as one task).
    in_process = True

    def imap(self, fn: Callable[[X], T], items: Iterable[X], total: int, desc: str | None = None) -> Iterator[T]:
        raise NotImplementedError

    def partitions(self, records: Source) -> Iterator[pl.DataFrame]:
        raise NotImplementedError

    def starts(self, records: Source) -> list[int]:
        raise NotImplementedError

    def map(self, fn: Callable[[pl.DataFrame], T], records: Source, desc: str | None = None) -> list[T]:
        """[fn(part) for part in partitions of the records], in partition order."""
        return list(self.imap_partitions(fn, records, desc))

    def imap_partitions(self, fn: Callable[[pl.DataFrame], T], records: Source, desc: str | None = None) -> Iterator[T]:
        """`map` one result at a time, for results too large to hold together (embeddings)."""
        return self.imap(fn, self.partitions(records), len(self.starts(records)), desc)


class LocalEngine(_Engine):
    name = "local"

    def imap(self, fn: Callable[[X], T], items: Iterable[X], total: int, desc: str | None = None) -> Iterator[T]:
        """fn(item) for each item, in this process."""
        yield from (fn(item) for item in items)

    def partitions(self, records: Source) -> Iterator[pl.DataFrame]:
        """A corpus's shards one by one, or the whole frame (the functions use threads on it)."""
        yield from (shard for shard, _ in shards(records))

    def starts(self, records: Source) -> list[int]:
        """The first row of each partition."""
        return records.starts if isinstance(records, Corpus) else [0]


class RayEngine(_Engine):
    """Ray tasks over row partitions. Connects on creation: a wrong address fails before any work."""

    name = "ray"
    in_process = False

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
                    runtime_env={"env_vars": OFFLINE},
                )
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"execution.address: cannot reach Ray at {cfg.address!r}: {e}") from e
        resources = ray.cluster_resources()
        log.info("ray: %s CPUs on %s nodes", resources.get("CPU"), len(ray.nodes()))

    def partitions(self, records: Source) -> Iterator[pl.DataFrame]:
        """A corpus's shards, or slices of batch_size rows of a frame."""
        if isinstance(records, Corpus):
            yield from records.frames()
        else:
            yield from (records.slice(lo, self.batch_size) for lo in self.starts(records))

    def starts(self, records: Source) -> list[int]:
        if isinstance(records, Corpus):
            return records.starts
        return list(range(0, records.height, self.batch_size)) or [0]

    def imap(self, fn: Callable[[X], T], items: Iterable[X], total: int, desc: str | None = None) -> Iterator[T]:
        """One Ray task per item, in item order; at most `window` submitted and not yet yielded,
        so neither the items nor the results pile up in the driver."""
        ray = self._ray
        task = ray.remote(_call)
        if storage := storage_env():  # workers open the run's s3:// inputs on the driver's endpoint
            task = task.options(runtime_env={"env_vars": {**OFFLINE, **storage}})
        fn_ref = ray.put(fn)  # shipped once, not once per item
        window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))  # keeps every worker busy
        pending: deque = deque()
        with tqdm(total=total, desc=f"{desc} (ray)" if desc else "ray", disable=not self.progress) as bar:
            for item in items:
                pending.append(task.remote(fn_ref, item))
                if len(pending) >= window:
                    yield ray.get(pending.popleft())
                    bar.update()
            while pending:
                yield ray.get(pending.popleft())
                bar.update()


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


def _call(fn: Callable[[X], T], item: X) -> T:
    return fn(item)


Engine = LocalEngine | RayEngine


def open_engine(cfg: ExecutionConfig, progress: bool = True) -> Engine:
    return RayEngine(cfg, progress) if cfg.engine == "ray" else LocalEngine()
