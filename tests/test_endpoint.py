"""EndpointModel against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_server.py).

Everything goes through the real openai client and real sockets: request mapping, retries on
429/5xx (the client's own, honouring retry-after), timeouts, the concurrency cap, rate limits,
the budget, key handling, and the SQLite answer cache on top.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from pathlib import Path

import openai
import pytest
from openai_server import (
    FakeOpenAI,
    Reply,
    always_fail,
    echo,
    fail_first,
    prompt_of,
    rating_handler,
    slow,
    unparsable,
)

from curation.llm.cache import AnswerCache, CachedModel
from curation.llm.endpoint import Budget, EndpointModel, estimate_cost
from curation.llm.types import ChatRequest, Completion
from schemas.base import ConfigError, StageFailed
from schemas.jury import Endpoint, Price

SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["reason", "score"],
    "additionalProperties": False,
}
KEY_ENV = "CURATE_TEST_ENDPOINT_KEY"
SECRET = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK"


def ask(text: str, **options: object) -> ChatRequest:
    return ChatRequest(messages=(("system", "You are a judge."), ("user", text)), **options)


def endpoint(server: FakeOpenAI, **fields: object) -> Endpoint:
    return Endpoint(base_url=server.base_url, model="judge-1", **fields)


def calls_for(server: FakeOpenAI, text: str) -> int:
    return sum(prompt_of(body) == text for body in server.calls)


def test_answers_in_request_order_with_usage(openai_server: FakeOpenAI) -> None:
    openai_server.handler = slow(0.05, match="q0")  # the first request finishes last
    model = EndpointModel(endpoint(openai_server, max_concurrency=8))
    done: dict[int, Completion] = {}
    requests = [ask(f"q{i}") for i in range(20)]

    out = model.complete(requests, on_done=done.__setitem__)

    assert [c.text for c in out] == [f"echo: q{i}" for i in range(20)]
    assert done == dict(enumerate(out))
    assert openai_server.call_count == 20
    assert (model.usage.requests, model.usage.failures) == (20, 0)
    assert (model.usage.prompt_tokens, model.usage.completion_tokens) == (200, 100)
    assert model.complete([]) == []
    assert model.identity == f"endpoint {openai_server.base_url} judge-1"


def test_request_mapping(openai_server: FakeOpenAI) -> None:
    model = EndpointModel(endpoint(openai_server))
    model.complete([ask("a", json_schema=SCHEMA, seed=7, temperature=0.3, max_tokens=12, logprobs=True)])
    body = openai_server.calls[0]
    assert body["model"] == "judge-1"
    assert body["messages"] == [
        {"role": "system", "content": "You are a judge."},
        {"role": "user", "content": "a"},
    ]
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.3, 12, 7)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "rating", "schema": SCHEMA, "strict": True},
    }
    assert "logprobs" not in body  # the endpoint is not declared to support them

    plain = EndpointModel(endpoint(openai_server, json_schema=False))
    plain.complete([ask("b", json_schema=SCHEMA)])
    assert "response_format" not in openai_server.calls[1]
    assert "seed" not in openai_server.calls[1]


def test_refused_json_schema_steps_down_once_at_the_probe(
    openai_server: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    def no_schemas(body: dict) -> Reply:
        if "response_format" in body:
            return Reply(status=400, text="response_format is not supported")
        return Reply(text="Rating: 4")

    openai_server.handler = no_schemas
    model = EndpointModel(endpoint(openai_server, max_concurrency=1))
    with caplog.at_level(logging.WARNING, logger="curation.llm.endpoint"):
        out = model.complete([ask(f"q{i}", json_schema=SCHEMA) for i in range(5)])
        model.complete([ask("later", json_schema=SCHEMA)])

    assert [c.text for c in out] == ["Rating: 4"] * 5
    assert model.structured is None
    # plain, json_schema, json_object: once per model, then plain requests only
    assert [p.get("response_format", {}).get("type") for p in openai_server.probes] == [None, "json_schema", "json_object"]
    assert openai_server.call_count == 6 and not any("response_format" in c for c in openai_server.calls)
    assert caplog.text.count("does not accept response_format json_schema") == 1


def test_llama_cpp_500_on_json_schema_is_not_retried_and_json_object_is_used(openai_server: FakeOpenAI) -> None:
    # What the llama-cpp-python server answers: a 500 whose body is a pydantic validation error.
    def llama_cpp(body: dict) -> Reply:
        if (body.get("response_format") or {}).get("type") == "json_schema":
            return Reply(status=500, text="1 validation error: Input should be 'text' or 'json_object'")
        return Reply(text='{"reason": "ok", "score": 4}')

    openai_server.handler = llama_cpp
    model = EndpointModel(endpoint(openai_server, max_retries=5))

    out = model.complete([ask(f"q{i}", json_schema=SCHEMA) for i in range(3)])

    assert [json.loads(c.text)["score"] for c in out] == [4, 4, 4]
    assert model.structured == "json_object"
    assert len(openai_server.probes) == 3  # the 500 was not retried five times
    assert {c["response_format"]["type"] for c in openai_server.calls} == {"json_object"}


def test_refused_request_is_not_retried(openai_server: FakeOpenAI) -> None:
    openai_server.handler = always_fail(400, match="bad")
    model = EndpointModel(endpoint(openai_server, max_retries=5))

    out = model.complete([ask("bad"), ask("good")])

    assert [c.error for c in out] == ["http 400", None]
    assert calls_for(openai_server, "bad") == 1


def test_identical_failures_in_a_row_stop_the_endpoint(openai_server: FakeOpenAI) -> None:
    openai_server.handler = always_fail(503, match="q")
    model = EndpointModel(endpoint(openai_server, max_retries=0, max_concurrency=1, max_consecutive_failures=4))

    with pytest.raises(StageFailed, match=r"4 requests in a row failed with http 503"):
        model.complete([ask(f"q{i}") for i in range(50)])

    assert openai_server.call_count == 4  # the other 46 were never sent


def test_logprobs_the_server_ignores_stop_with_the_option_to_change(openai_server: FakeOpenAI) -> None:
    model = EndpointModel(endpoint(openai_server, logprobs=True))  # echo never returns logprobs

    with pytest.raises(StageFailed, match="returned no log-probabilities: set logprobs: false"):
        model.complete([ask("rate", logprobs=True)])
    assert openai_server.call_count == 0


def test_logprobs_parsed_per_position(openai_server: FakeOpenAI) -> None:
    openai_server.handler = lambda body: Reply(
        text="4 fine", logprobs=[{"4": -0.1, "5": -2.5, "3": -3.0}, {" fine": -0.01, " good": -4.6}]
    )
    model = EndpointModel(endpoint(openai_server, logprobs=True))

    (out,) = model.complete([ask("rate", logprobs=True, top_logprobs=2)])

    assert openai_server.calls[0]["logprobs"] is True
    assert openai_server.calls[0]["top_logprobs"] == 2
    assert out.logprobs == [{"4": -0.1, "5": -2.5}, {" fine": -0.01, " good": -4.6}]


def test_rating_replies_in_each_requested_format(openai_server: FakeOpenAI) -> None:
    openai_server.handler = rating_handler(lambda prompt: 4)
    model = EndpointModel(endpoint(openai_server, logprobs=True))

    as_json, as_logprobs, as_text = model.complete(
        [ask("a", json_schema=SCHEMA), ask("b", logprobs=True, max_tokens=1), ask("c")]
    )

    assert json.loads(as_json.text)["score"] == 4
    assert as_logprobs.text == "4"
    first = {token: math.exp(lp) for token, lp in as_logprobs.logprobs[0].items()}
    assert max(first, key=first.get) == "4"
    assert 3.5 < sum(int(t) * p for t, p in first.items()) / sum(first.values()) < 4.5
    assert as_text.text.endswith("Rating: 4")


def test_429_with_retry_after_then_success(openai_server: FakeOpenAI) -> None:
    openai_server.handler = fail_first(3, status=429, match="flaky")  # retry-after-ms: 10
    model = EndpointModel(endpoint(openai_server, max_retries=5))
    requests = [ask("ok 1"), ask("flaky"), ask("ok 2")]

    start = time.perf_counter()
    out = model.complete(requests)
    seconds = time.perf_counter() - start

    assert [c.text for c in out] == ["echo: ok 1", "echo: flaky", "echo: ok 2"]
    assert calls_for(openai_server, "flaky") == 4
    assert openai_server.call_count == 6
    # The client's own backoff without retry-after would sleep at least 0.375 + 0.75 + 1.5 s.
    assert seconds < 1.5
    assert model.usage.failures == 0


def test_500_then_success(openai_server: FakeOpenAI) -> None:
    openai_server.handler = fail_first(1, status=500)
    model = EndpointModel(endpoint(openai_server))

    out = model.complete([ask(f"q{i}") for i in range(4)])

    assert [c.text for c in out] == [f"echo: q{i}" for i in range(4)]
    assert openai_server.call_count == 8


def test_permanent_500_is_an_error_in_place(openai_server: FakeOpenAI) -> None:
    openai_server.handler = always_fail(500, match="broken")
    model = EndpointModel(endpoint(openai_server, max_retries=2))
    requests = [ask("q0"), ask("broken"), ask("q2")]

    out = model.complete(requests)

    assert [c.text for c in out] == ["echo: q0", None, "echo: q2"]
    assert out[1].error == "http 500"
    assert calls_for(openai_server, "broken") == 3  # the first try and max_retries
    assert (model.usage.requests, model.usage.failures) == (3, 1)
    assert model.usage.by_error == {"http 500": 1}


def test_timeout_is_an_error_quickly(openai_server: FakeOpenAI) -> None:
    openai_server.handler = slow(3.0, match="stuck")
    model = EndpointModel(endpoint(openai_server, timeout=0.3, max_retries=1))

    start = time.perf_counter()
    out = model.complete([ask("stuck"), ask("fine")])
    seconds = time.perf_counter() - start

    assert out[0].text is None and out[0].error == "timeout"
    assert out[1].text == "echo: fine"
    assert calls_for(openai_server, "stuck") == 2
    assert seconds < 2.0  # two 0.3 s attempts and one backoff of at most 0.5 s


def test_unreachable_server_stops_at_the_probe() -> None:
    with FakeOpenAI() as server:
        base_url = server.base_url  # closed when the block ends: nothing listens there now
    model = EndpointModel(Endpoint(base_url=base_url, model="m", max_retries=0))

    with pytest.raises(StageFailed, match=r"does not answer: connection error \(is the server running"):
        model.complete([ask("anyone?")])


def test_unparsable_text_passes_through(openai_server: FakeOpenAI) -> None:
    openai_server.handler = unparsable
    (out,) = EndpointModel(endpoint(openai_server)).complete([ask("rate this")])
    assert out.text == "I would rather not put a number on this one."
    assert out.error is None


def test_malformed_answers_are_errors_in_place(openai_server: FakeOpenAI) -> None:
    openai_server.handler = lambda body: Reply(text=None) if prompt_of(body) == "empty" else echo(body)
    out = EndpointModel(endpoint(openai_server)).complete([ask("empty"), ask("q1")])
    assert (out[0].text, out[0].error) == (None, "empty answer")
    assert out[1].text == "echo: q1"


def test_concurrency_cap(openai_server: FakeOpenAI) -> None:
    openai_server.latency = 0.05
    model = EndpointModel(endpoint(openai_server, max_concurrency=4))

    out = model.complete([ask(f"q{i}") for i in range(24)])

    assert all(c.text for c in out)
    assert openai_server.max_in_flight == 4


@pytest.mark.parametrize("limit", [{"requests_per_minute": 600}, {"tokens_per_minute": 60_000}])
def test_rate_limits_spread_a_burst(openai_server: FakeOpenAI, limit: dict) -> None:
    # Both allow 10 requests per second here (a request is ~100 estimated tokens), in bursts
    # of one second's worth: 25 requests need about 1.5 s, against a few ms unlimited.
    requests = [ask(f"q{i}", max_tokens=96) for i in range(25)]
    unlimited = EndpointModel(endpoint(openai_server, max_concurrency=25))
    limited = EndpointModel(endpoint(openai_server, max_concurrency=25, **limit))

    start = time.perf_counter()
    unlimited.complete(requests)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    out = limited.complete(requests)
    slowed = time.perf_counter() - start

    assert all(c.text for c in out)
    assert fast < 0.8
    assert 1.3 < slowed < 2.5


def test_budget_stops_further_calls(openai_server: FakeOpenAI) -> None:
    price = Price(input_per_million=1000, output_per_million=1000)  # a call (10 + 5 tokens) = $0.015
    cfg = endpoint(openai_server, max_concurrency=1, price=price)
    model = EndpointModel(cfg, Budget(0.04))
    requests = [ask(f"q{i}") for i in range(10)]

    out = model.complete(requests)

    assert openai_server.call_count == 3  # $0.045 spent after the third: over the cap
    assert [c.text for c in out[:3]] == ["echo: q0", "echo: q1", "echo: q2"]
    assert all(c.text is None and c.error == "budget exhausted" for c in out[3:])
    assert model.usage.cost_usd == pytest.approx(0.045)
    assert model.usage.by_error == {"budget exhausted": 7}
    assert model.budget.exhausted

    # The pre-run estimate: chars/4 (+1) prompt tokens and all of max_tokens, at the price.
    prompt = sum((len("You are a judge.") + len(f"q{i}")) // 4 + 1 for i in range(10))
    assert estimate_cost(cfg, requests) == pytest.approx((prompt + 10 * 256) * 1000 / 1e6)
    assert estimate_cost(endpoint(openai_server), requests) is None


def test_budget_shared_between_models(openai_server: FakeOpenAI) -> None:
    price = Price(input_per_million=1000, output_per_million=1000)
    budget = Budget(0.02)
    first = EndpointModel(endpoint(openai_server, price=price), budget)
    second = EndpointModel(endpoint(openai_server, price=price), budget)

    first.complete([ask("a"), ask("b")])  # $0.03: over the shared cap
    out = second.complete([ask("c")])

    assert openai_server.call_count == 2
    assert out[0].error == "budget exhausted"


def test_missing_key_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    cfg = Endpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=KEY_ENV)
    with pytest.raises(ConfigError, match=KEY_ENV):
        EndpointModel(cfg)


def test_key_is_sent_but_never_leaks(
    openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)

    def handler(body: dict) -> Reply:
        prompt = prompt_of(body)
        if prompt == "auth":  # as real servers do: the message echoes the key it refused
            return Reply(status=401, text=f"Incorrect API key provided: {SECRET}")
        if prompt == "down":
            return Reply(status=503, text=f"overloaded (key {SECRET[:-5]}, header Authorization: Bearer {SECRET[:-5]})")
        return Reply(text="fine", delay=1.0 if prompt == "stuck" else 0.0)

    openai_server.handler = handler
    model = EndpointModel(endpoint(openai_server, api_key_env=KEY_ENV, timeout=0.3, max_retries=1))
    with caplog.at_level(logging.DEBUG):
        out = model.complete([ask("auth"), ask("down"), ask("stuck"), ask("ok")], progress="judging")

    assert [c.error for c in out] == ["http 401", "http 503", "timeout", None]
    assert {h["authorization"] for h in openai_server.headers} == {f"Bearer {SECRET}"}
    assert "http 401" in caplog.text  # the failures were logged...
    fragments = {SECRET[i : i + 8] for i in range(len(SECRET) - 7)}
    assert "overloaded" in caplog.text
    assert not [f for f in fragments if f in caplog.text]  # ...without the key or any 8 characters of it
    assert SECRET not in model.identity
    assert not any(SECRET in repr(c) for c in out)
    assert SECRET not in repr(model.usage)


def test_no_key_variable_sends_a_placeholder(openai_server: FakeOpenAI) -> None:
    EndpointModel(endpoint(openai_server)).complete([ask("hi")])
    assert openai_server.headers[0]["authorization"] == "Bearer not-needed"


def test_complete_inside_a_running_event_loop(openai_server: FakeOpenAI) -> None:
    model = EndpointModel(endpoint(openai_server))

    async def caller() -> list[Completion]:
        return model.complete([ask("from a notebook")])

    assert asyncio.run(caller())[0].text == "echo: from a notebook"


def test_cached_model_calls_only_for_what_is_missing(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    cfg = endpoint(openai_server)
    first_half = [ask(f"q{i}") for i in range(10)]
    cache = AnswerCache(tmp_path)
    out = CachedModel(EndpointModel(cfg), cache).complete(first_half)
    assert openai_server.call_count == 10 and not any(c.cached for c in out)

    # A new process would build a new model: the answers come from the SQLite file.
    again = CachedModel(EndpointModel(cfg), AnswerCache(tmp_path))
    out = again.complete(first_half)
    assert openai_server.call_count == 10
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(10)] and all(c.cached for c in out)

    everything = first_half + [ask(f"q{i}") for i in range(10, 20)]
    out = CachedModel(EndpointModel(cfg), AnswerCache(tmp_path)).complete(everything)
    assert openai_server.call_count == 20
    assert sorted(prompt_of(b) for b in openai_server.calls[10:]) == sorted(f"q{i}" for i in range(10, 20))
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(20)]


def test_server_lists_models(openai_server: FakeOpenAI) -> None:
    client = openai.OpenAI(api_key="x", base_url=openai_server.base_url, max_retries=0)
    assert [m.id for m in client.models.list()] == ["fake"]
