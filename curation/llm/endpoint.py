"""A ChatModel for any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, ...).

Requests run concurrently (at most `max_concurrency` in flight) under optional requests- and
tokens-per-minute limits, and with a shared dollar budget. Retries on 408/409/429/5xx, timeouts
and connection errors, with exponential backoff, jitter and `retry-after`, are the openai
client's own. A request that still fails comes back as a Completion with an error, never as an
exception. The API key is read from the environment and never appears in identity, logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import orjson
from tqdm import tqdm

from curation.llm.types import ChatRequest, Completion, OnDone, Usage
from schemas.base import ConfigError
from schemas.jury import Endpoint, Price

log = logging.getLogger(__name__)

NO_KEY = "not-needed"  # local servers (vLLM, llama.cpp, Ollama) ignore the key; the client wants one
BUDGET_EXHAUSTED = "budget exhausted"


class Budget:
    """A dollar cap shared by every model of a run (and their threads)."""

    def __init__(self, limit_usd: float | None) -> None:
        self.limit_usd = limit_usd
        self._spent = 0.0
        self._lock = threading.Lock()

    def charge(self, usd: float) -> None:
        with self._lock:
            self._spent += usd

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self._spent

    @property
    def exhausted(self) -> bool:
        return self.limit_usd is not None and self.spent_usd >= self.limit_usd


def prompt_tokens_estimate(request: ChatRequest) -> int:
    """About four characters per token: good enough for limits and estimates, needs no tokenizer."""
    return sum(len(content) for _, content in request.messages) // 4 + 1


def cost_usd(price: Price | None, prompt_tokens: float, completion_tokens: float) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million) / 1e6


def estimate_cost(cfg: Endpoint, requests: Sequence[ChatRequest]) -> float | None:
    """An upper-end pre-run estimate (every answer uses all of max_tokens); None without a price."""
    if cfg.price is None:
        return None
    prompt = sum(prompt_tokens_estimate(r) for r in requests)
    return cost_usd(cfg.price, prompt, sum(r.max_tokens for r in requests))


class EndpointModel:
    """The ChatModel of one endpoint and model name; `budget` may be shared with other models."""

    def __init__(self, cfg: Endpoint, budget: Budget | None = None) -> None:
        self.cfg = cfg
        self.budget = budget or Budget(None)
        self.identity = f"endpoint {cfg.base_url} {cfg.model}"
        self.supports_json_schema = cfg.json_schema
        self.supports_logprobs = cfg.logprobs
        self.usage = Usage()
        self._api_key = _api_key(cfg)
        self._errors_logged: set[str] = set()

    def complete(
        self, requests: Sequence[ChatRequest], on_done: OnDone | None = None, progress: str | None = None
    ) -> list[Completion]:
        if not requests:
            return []

        def run() -> list[Completion]:
            return asyncio.run(self._complete_all(requests, on_done, progress))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run()
        # asyncio.run cannot nest inside a running loop (e.g. a notebook): use a thread of our own.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(run).result()

    async def _complete_all(
        self, requests: Sequence[ChatRequest], on_done: OnDone | None, progress: str | None
    ) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        limits = _Limits(self.cfg)
        # max_concurrency workers share one queue: the cap holds, and a long run does not create
        # one task per request up front.
        pending = iter(range(len(requests)))
        with tqdm(total=len(requests), desc=progress, disable=progress is None) as bar:
            async with self._client() as client:

                async def worker() -> None:
                    for i in pending:
                        completion = await self._one(client, requests[i], limits)
                        self._account(completion)
                        results[i] = completion
                        if on_done:
                            on_done(i, completion)
                        bar.update()

                await asyncio.gather(*(worker() for _ in range(min(self.cfg.max_concurrency, len(requests)))))
        return results  # type: ignore[return-value]

    def _client(self) -> openai.AsyncOpenAI:
        # One client per run: its connection pool belongs to the event loop asyncio.run creates.
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.cfg.base_url,
            timeout=self.cfg.timeout,
            max_retries=self.cfg.max_retries,
        )

    async def _one(self, client: openai.AsyncOpenAI, request: ChatRequest, limits: _Limits) -> Completion:
        # Checked before waiting for a rate slot (no waiting to be refused) and again right
        # before sending; requests already in flight finish.
        if self.budget.exhausted:
            return Completion(text=None, error=BUDGET_EXHAUSTED)
        await limits.acquire(request)
        if self.budget.exhausted:
            return Completion(text=None, error=BUDGET_EXHAUSTED)
        arguments = self._arguments(request)
        try:
            try:
                body = await self._post(client, arguments)
            except openai.BadRequestError:
                if "response_format" not in arguments:
                    raise
                del arguments["response_format"]
                body = await self._post(client, arguments)
                self._drop_json_schema()  # only once the plain request worked: the 400 was the schema
            return _completion(orjson.loads(body))
        except Exception as err:  # noqa: BLE001 - one bad item must not sink the run
            return Completion(text=None, error=self._describe(err))

    @staticmethod
    async def _post(client: openai.AsyncOpenAI, arguments: dict[str, Any]) -> bytes:
        # The client's generic post (documented for custom requests) keeps its retries but skips
        # chat.completions.create's recursive parameter transform and pydantic response models:
        # together 40% of the client's CPU per request, which caps throughput on a small machine.
        return await client.post("/chat/completions", body=arguments, cast_to=bytes)

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": request.openai_messages(),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            arguments["seed"] = request.seed
        if request.json_schema and self.supports_json_schema:
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "rating", "schema": request.json_schema, "strict": True},
            }
        if request.logprobs and self.supports_logprobs:
            arguments["logprobs"] = True
            arguments["top_logprobs"] = request.top_logprobs
        return arguments

    def _drop_json_schema(self) -> None:
        if self.supports_json_schema:
            self.supports_json_schema = False
            log.warning(
                "%s rejected response_format json_schema (http 400); asking without it for the rest of the run",
                self.identity,
            )

    def _account(self, completion: Completion) -> None:
        cost = cost_usd(self.cfg.price, completion.prompt_tokens, completion.completion_tokens)
        self.budget.charge(cost)
        self.usage.add(completion, cost)

    def _describe(self, err: Exception) -> str:
        """A short, key-free error for the Completion; the first of each kind is also logged."""
        if isinstance(err, openai.APITimeoutError):  # a subclass of APIConnectionError
            error = "timeout"
        elif isinstance(err, openai.APIConnectionError):
            error = "connection error"
        elif isinstance(err, openai.APIStatusError):
            error = f"http {err.status_code}"
        else:
            error = f"bad response ({type(err).__name__})"
        if error not in self._errors_logged:
            self._errors_logged.add(error)
            # Servers may echo the key (or part of it) in a message: never let it reach a log.
            message = str(err).replace(self._api_key, "***")
            log.warning("%s: %s (%s); later failures of this kind are only counted", self.identity, error, message)
        return error


def _api_key(cfg: Endpoint) -> str:
    if cfg.api_key_env is None:
        return NO_KEY
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise ConfigError(f"environment variable {cfg.api_key_env} (the API key for {cfg.base_url}) is not set")
    return key


def _completion(body: dict[str, Any]) -> Completion:
    """A chat.completion JSON body -> Completion; a malformed one raises (and becomes an error)."""
    usage = body.get("usage") or {}
    tokens = {
        "prompt_tokens": usage.get("prompt_tokens") or 0,
        "completion_tokens": usage.get("completion_tokens") or 0,
    }
    choice = body["choices"][0]
    text = choice["message"].get("content")
    if text is None:
        return Completion(text=None, error="empty answer", **tokens)
    positions = (choice.get("logprobs") or {}).get("content")
    logprobs = None
    if positions:
        logprobs = [
            {p["token"]: p["logprob"], **{top["token"]: top["logprob"] for top in p.get("top_logprobs") or ()}}
            for p in positions
        ]
    return Completion(text=text, logprobs=logprobs, **tokens)


class _RateLimiter:
    """Spreads `per_minute` units evenly, allowing a burst of one second's worth.

    Providers often enforce a minute limit over shorter windows, so letting a whole minute's
    allowance go at once would only draw 429s. A unit count above the burst (a long prompt
    under a tokens limit) is let through and paid for by waiting afterwards.
    """

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1.0, self.rate)
        self.level = self.burst
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()  # first come, first served

    async def acquire(self, units: float) -> None:
        async with self.lock:
            need = min(units, self.burst)
            self._refill()
            if self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= units  # may go below zero: the next caller waits it off

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now


class _Limits:
    def __init__(self, cfg: Endpoint) -> None:
        self.requests = _RateLimiter(cfg.requests_per_minute) if cfg.requests_per_minute else None
        self.tokens = _RateLimiter(cfg.tokens_per_minute) if cfg.tokens_per_minute else None

    async def acquire(self, request: ChatRequest) -> None:
        if self.requests:
            await self.requests.acquire(1)
        if self.tokens:
            await self.tokens.acquire(prompt_tokens_estimate(request) + request.max_tokens)
