"""What every chat model takes and returns, so judges and generators do not care which it is.

A model never raises for one bad item: a request that still fails after retries (or is skipped
because the budget ran out) comes back as a Completion with `text=None` and an `error`, in its
place, so results never shift against their requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import orjson


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs, OpenAI chat roles
    temperature: float = 0.0
    max_tokens: int = 256
    json_schema: dict | None = None  # honoured where the model supports structured output
    logprobs: bool = False  # return the top log-probabilities of each generated token
    top_logprobs: int = 20
    # Local models also return these tokens' log-probs at every position, in the top list or
    # not, so a G-Eval score always sees all rating labels. Endpoints ignore it.
    logprob_tokens: tuple[str, ...] = ()
    seed: int | None = None

    def key(self) -> str:
        """A stable hash of everything that decides the answer (for the cache)."""
        # vars(), not asdict(): asdict deep-copies the JSON schema on every call (the cost of a
        # fully cached re-run); orjson writes the tuples as lists either way.
        return hashlib.sha256(orjson.dumps(vars(self), option=orjson.OPT_SORT_KEYS)).hexdigest()

    def openai_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass
class Completion:
    text: str | None  # None when the request failed for good
    # Per generated token: {token text: log-prob} for the top tokens (and logprob_tokens).
    logprobs: list[dict[str, float]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # why text is None: "http 500", "timeout", "budget exhausted", ...
    cached: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps({k: v for k, v in asdict(self).items() if k != "cached"})

    @classmethod
    def from_json(cls, data: bytes) -> Completion:
        return cls(**orjson.loads(data), cached=True)


@dataclass
class Usage:
    """What a model has consumed in this process (cached answers cost nothing)."""

    requests: int = 0
    failures: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    by_error: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Usage) -> None:
        """Add another process's usage of the same model."""
        for name in ("requests", "failures", "cached", "prompt_tokens", "completion_tokens", "cost_usd"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for error, count in other.by_error.items():
            self.by_error[error] = self.by_error.get(error, 0) + count

    def add(self, completion: Completion, cost_usd: float = 0.0) -> None:
        if completion.cached:
            self.cached += 1
            return
        self.requests += 1
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.cost_usd += cost_usd
        if completion.text is None:
            self.failures += 1
            error = completion.error or "unknown"
            self.by_error[error] = self.by_error.get(error, 0) + 1


OnDone = Callable[[int, Completion], None]


class ChatModel(Protocol):
    # Stable and secret-free: part of the cache key and shown in reports.
    identity: str

    # Read-only: a wrapper (curation/llm/cache.py's CachedModel) answers them from the model it wraps.
    @property
    def supports_json_schema(self) -> bool: ...

    @property
    def supports_logprobs(self) -> bool: ...

    @property
    def usage(self) -> Usage: ...

    def complete(
        self, requests: Sequence[ChatRequest], on_done: OnDone | None = None, progress: str | None = None
    ) -> list[Completion]:
        """One Completion per request, in request order. `on_done(i, c)` fires as each finishes
        (so a cache can persist it before the run ends); `progress` names a progress bar."""
        ...
