"""A ChatModel for any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, ...).

Requests run concurrently (at most `max_concurrency` in flight) under optional requests- and
tokens-per-minute limits, and with a shared dollar budget. A request that fails comes back as a
Completion with an error, never as an exception; the endpoint itself failing raises StageFailed:

- Probed, not assumed: before its first request, one small request checks that the server
  answers and accepts the configured modes. `logprobs: true` that the server refuses (or ignores)
  stops the run, saying which option to change; a refused `response_format` json_schema falls
  back to json_object, then to plain text (the judge's parser reads both), with a warning.
- Retried only when retrying can help: timeouts, connection errors, 408/409/429/502/503/504 and
  a 500 that is not a validation error, with exponential backoff, jitter and `retry-after`. A
  request the server refuses (4xx, or a 500 whose body is a validation error, as
  llama-cpp-python answers an unsupported response_format) fails at once.
- `max_consecutive_failures` identical failures in a row stop the endpoint: the rest of the
  batch is not sent, and complete() raises StageFailed naming the endpoint and the error.

The API key is read from the environment, registered for masking (curation/llm/secrets.py) and
never appears in identity, logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import orjson
from tqdm import tqdm

from curation.llm.secrets import mask_secrets, register_secret
from curation.llm.types import ChatRequest, Completion, OnDone, Usage
from schemas.base import ConfigError, StageFailed
from schemas.jury import Endpoint, Price

log = logging.getLogger(__name__)

NO_KEY = "not-needed"  # local servers (vLLM, llama.cpp, Ollama) ignore the key; the client wants one
BUDGET_EXHAUSTED = "budget exhausted"
TRANSIENT_STATUS = frozenset({408, 409, 429, 502, 503, 504})
# A 500 whose body reads as a validation error is the server refusing this request, not a hiccup.
_VALIDATION_ERROR = re.compile(r"validation|input should be|invalid|not supported|unsupported", re.IGNORECASE)
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 60.0
# The probe: a request any chat model answers in a few tokens.
PROBE_MESSAGES = (("user", 'Reply with the JSON object {"ok": true} and nothing else.'),)
PROBE_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}


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
        # What response_format a json_schema request is sent with: the probe may step it down.
        self.structured: str | None = "json_schema" if cfg.json_schema else None
        self.usage = Usage()
        self._api_key = _api_key(cfg)
        self._errors_logged: set[str] = set()
        self._probed = False
        self._streak: tuple[str | None, int] = (None, 0)  # the last error kind and how often in a row
        self._stopped: str | None = None  # why the endpoint stopped (max_consecutive_failures)

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
                if not self._probed:
                    await self._probe(client)
                    self._probed = True

                async def worker() -> None:
                    for i in pending:
                        completion = await self._one(client, requests[i], limits)
                        self._account(completion)
                        self._count_streak(completion)
                        results[i] = completion
                        if on_done:
                            on_done(i, completion)
                        bar.update()

                await asyncio.gather(*(worker() for _ in range(min(self.cfg.max_concurrency, len(requests)))))
        if self._stopped:
            raise StageFailed(f"{self.identity}: {self._stopped}; stopped asking it (answers received so far are cached)")
        return results  # type: ignore[return-value]

    async def _probe(self, client: openai.AsyncOpenAI) -> None:
        """One small request (two with json_schema): does the server answer, and does it accept the
        configured modes? Raises StageFailed with the option to change; steps `structured` down."""
        messages = [{"role": r, "content": c} for r, c in PROBE_MESSAGES]
        plain = {"model": self.cfg.model, "messages": messages, "temperature": 0, "max_tokens": 8}
        logprobs = {"logprobs": True, "top_logprobs": 1} if self.supports_logprobs else {}
        try:
            body = await self._post(client, {**plain, **logprobs})
        except openai.APIError as err:
            if logprobs and not _transient(err) and await self._accepts(client, plain):
                refused = f"{self.identity} refuses logprobs ({self._describe(err)})"
                raise StageFailed(f"{refused}: set logprobs: false for it") from None
            raise StageFailed(f"{self.identity} does not answer: {self._describe(err)}{_hint(err)}") from None
        if self.supports_logprobs and not _completion(orjson.loads(body)).logprobs:
            raise StageFailed(f"{self.identity} returned no log-probabilities: set logprobs: false for it")
        if self.structured is None:
            return
        kind = None
        for candidate in ("json_schema", "json_object"):  # the documented order of fallback
            if await self._accepts(client, {**plain, "response_format": _response_format(candidate, PROBE_SCHEMA)}):
                kind = candidate
                break
        if kind != "json_schema":
            log.warning(
                "%s does not accept response_format json_schema: asking with %s (set json_schema: false to skip this check)",
                self.identity, f"response_format {kind}" if kind else "no response_format",
            )
        self.structured = kind

    async def _accepts(self, client: openai.AsyncOpenAI, arguments: dict[str, Any]) -> bool:
        try:
            await self._post(client, arguments)
        except openai.APIError:
            return False
        return True

    def _count_streak(self, completion: Completion) -> None:
        error = completion.error if completion.text is None and completion.error != BUDGET_EXHAUSTED else None
        last, count = self._streak
        self._streak = (error, count + 1 if error is not None and error == last else int(error is not None))
        if error is not None and self._streak[1] >= self.cfg.max_consecutive_failures and self._stopped is None:
            self._stopped = f"{self._streak[1]} requests in a row failed with {error}"

    def _client(self) -> openai.AsyncOpenAI:
        # One client per run: its connection pool belongs to the event loop asyncio.run creates.
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.cfg.base_url,
            timeout=self.cfg.timeout,
            max_retries=0,  # retried here (_post): only what retrying can fix
        )

    async def _one(self, client: openai.AsyncOpenAI, request: ChatRequest, limits: _Limits) -> Completion:
        # Checked before waiting for a rate slot (no waiting to be refused) and again right
        # before sending; requests already in flight finish.
        if self.budget.exhausted:
            return Completion(text=None, error=BUDGET_EXHAUSTED)
        if self._stopped:
            return Completion(text=None, error=self._streak[0] or "stopped")
        await limits.acquire(request)
        if self.budget.exhausted:
            return Completion(text=None, error=BUDGET_EXHAUSTED)
        try:
            return _completion(orjson.loads(await self._post(client, self._arguments(request))))
        except Exception as err:  # noqa: BLE001 - one bad item must not sink the run
            return Completion(text=None, error=self._describe(err))

    async def _post(self, client: openai.AsyncOpenAI, arguments: dict[str, Any]) -> bytes:
        # The client's generic post (documented for custom requests) skips chat.completions.create's
        # recursive parameter transform and pydantic response models: together 40% of the client's
        # CPU per request, which caps throughput on a small machine.
        for attempt in range(self.cfg.max_retries + 1):
            try:
                return await client.post("/chat/completions", body=arguments, cast_to=bytes)
            except openai.APIError as err:
                if attempt == self.cfg.max_retries or not _transient(err):
                    raise
                await asyncio.sleep(_backoff(err, attempt))
        raise AssertionError("unreachable")

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": request.openai_messages(),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            arguments["seed"] = request.seed
        if request.json_schema and self.structured:
            arguments["response_format"] = _response_format(self.structured, request.json_schema)
        if request.logprobs and self.supports_logprobs:
            arguments["logprobs"] = True
            arguments["top_logprobs"] = request.top_logprobs
        return arguments

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
            # Servers may echo the key (or part of it) in a message: the log-record factory masks it.
            log.warning("%s: %s (%s); later failures of this kind are only counted", self.identity, error, _message(err))
        return error


def _api_key(cfg: Endpoint) -> str:
    if cfg.api_key_env is None:
        return NO_KEY
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise ConfigError(f"environment variable {cfg.api_key_env} (the API key for {cfg.base_url}) is not set")
    register_secret(key)
    return key


def _transient(err: openai.APIError) -> bool:
    """Whether retrying can fix it: the network, a busy or briefly broken server."""
    if isinstance(err, openai.APIConnectionError):  # timeouts included
        return True
    if isinstance(err, openai.APIStatusError):
        if err.status_code in TRANSIENT_STATUS:
            return True
        return err.status_code >= 500 and not _VALIDATION_ERROR.search(str(err))
    return False


def _backoff(err: openai.APIError, attempt: int) -> float:
    """retry-after(-ms) when the server says, else 0.5 s doubling per attempt with jitter."""
    headers = err.response.headers if isinstance(err, openai.APIStatusError) else {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return min(float(headers[name]) * scale, MAX_RETRY_AFTER_S)
        except (KeyError, ValueError):
            continue
    return min(0.5 * 2**attempt, MAX_BACKOFF_S) * random.uniform(0.75, 1.0)


def _response_format(kind: str, schema: dict) -> dict:
    if kind == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "rating", "schema": schema, "strict": True}}


def _message(err: Exception, limit: int = 300) -> str:
    text = mask_secrets(str(err))
    return text if len(text) <= limit else text[:limit] + "..."


def _hint(err: openai.APIError) -> str:
    if isinstance(err, openai.APIStatusError) and err.status_code in (401, 403):
        return " (check the API key in the variable api_key_env names)"
    if isinstance(err, openai.APIStatusError) and err.status_code == 404:
        return " (check base_url and the model name)"
    if isinstance(err, openai.APIConnectionError):
        return " (is the server running at base_url?)"
    return f" ({_message(err)})"


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
