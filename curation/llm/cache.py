"""A persistent answer cache: re-runs and resumed runs only call a model for what is missing.

SQLite (one file, WAL) keyed by the model's identity (endpoint URL + model name, or local path)
and the hash of the whole request: prompt text (so the template and the record content), sampling
settings and output constraints. Each answer is committed as soon as it arrives, so a run killed
mid-way loses at most the requests in flight. Failed requests are not cached: a re-run retries them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from curation.llm.types import ChatModel, ChatRequest, Completion, OnDone, Usage
from schemas.bundled import cache_dir

CACHE_FILE = "llm_cache.sqlite"


class AnswerCache:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / CACHE_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (model TEXT, key TEXT, value BLOB, PRIMARY KEY (model, key))"
        )
        self._db.commit()

    def get_many(self, model: str, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # SQLite caps bound parameters
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, value FROM answers WHERE model = ? AND key IN ({marks})", [model, *chunk]
                )
                found.update((key, Completion.from_json(value)) for key, value in rows)
        return found

    def put(self, model: str, key: str, completion: Completion) -> None:
        if completion.text is None:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (model, key, completion.to_json())
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedModel:
    """A ChatModel that answers from the cache first and stores every new answer at once."""

    def __init__(self, model: ChatModel, cache: AnswerCache) -> None:
        self.model = model
        self.cache = cache
        self.identity = model.identity

    # Read through: an endpoint may find out mid-run that it lacks structured output.
    @property
    def supports_json_schema(self) -> bool:
        return self.model.supports_json_schema

    @property
    def supports_logprobs(self) -> bool:
        return self.model.supports_logprobs

    @property
    def usage(self) -> Usage:
        return self.model.usage

    def complete(
        self, requests: Sequence[ChatRequest], on_done: OnDone | None = None, progress: str | None = None
    ) -> list[Completion]:
        keys = [r.key() for r in requests]
        hits = self.cache.get_many(self.identity, sorted(set(keys)))
        results: list[Completion | None] = [hits.get(k) for k in keys]
        for i, hit in enumerate(results):
            if hit is not None:
                self.usage.add(hit)
                if on_done:
                    on_done(i, hit)
        missing = [i for i, r in enumerate(results) if r is None]

        def store(j: int, completion: Completion) -> None:
            i = missing[j]
            self.cache.put(self.identity, keys[i], completion)
            results[i] = completion
            if on_done:
                on_done(i, completion)

        if missing:
            fresh = self.model.complete([requests[i] for i in missing], on_done=store, progress=progress)
            for j, completion in enumerate(fresh):  # models call on_done; this covers any that do not
                if results[missing[j]] is None:
                    store(j, completion)
        return results  # type: ignore[return-value]


def default_cache(cfg_dir: str | None) -> AnswerCache:
    """The answer cache: jury.cache_dir, else one shared by all runs (`<cache>/llm`)."""
    return AnswerCache(Path(cfg_dir) if cfg_dir else cache_dir() / "llm")
