"""The local chat model (real bundled SmolLM2-135M-Instruct) and the rubric judge.

Slow tests load the real model (once per session, ~10 s; the first run on a machine also
converts the bundled GGUF, ~30 s). Parser and re-ask tests use no model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from curation.jury.judge import (
    CUT_MARK,
    JudgeItem,
    Rating,
    RubricJudge,
    bundled_rubrics,
    load_rubric,
    parse_rating,
    render_conversation,
    score_from_logprobs,
)
from curation.llm.types import ChatRequest, Completion, OnDone, Usage
from curation.preference.pairwise import PairwiseJudge
from schemas.base import ConfigError
from schemas.jury import Local

DIGITS = tuple(str(i) for i in range(1, 6))


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=(("user", text),), **kw)


# --------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def local():
    from curation.llm.local import LocalModel

    return LocalModel(Local(batch_size=4))


@pytest.mark.slow
def test_local_greedy_generation_is_sensible_and_counted(local) -> None:
    assert local.identity == "local bundled:smollm2-135m-instruct"
    assert (local.supports_logprobs, local.supports_json_schema) == (True, False)
    requests = [ask("What is the capital of France?", max_tokens=24), ask("What is 2+2?", max_tokens=24)]
    seen: list[int] = []
    out = local.complete(requests, on_done=lambda i, c: seen.append(i), progress="test")
    assert sorted(seen) == [0, 1]
    assert "Paris" in out[0].text
    assert "4" in out[1].text
    for c in out:
        assert c.error is None and c.prompt_tokens > 10 and 1 <= c.completion_tokens <= 24
    again = local.complete(requests[:1])  # greedy: the same answer alone as in a batch
    assert again[0].text == out[0].text
    assert local.usage.requests == 3 and local.usage.completion_tokens > 0


@pytest.mark.slow
def test_local_logprobs_carry_the_requested_tokens(local) -> None:
    request = ask("Rate the sentence 'The sky is blue.' from 1 to 5. Reply with a digit.", max_tokens=3,
                  logprobs=True, top_logprobs=5, logprob_tokens=DIGITS)
    (c,) = local.complete([request])
    assert c.logprobs is not None and 1 <= len(c.logprobs) <= 3
    for position in c.logprobs:
        assert set(DIGITS) <= set(position)  # every label, in the top list or not
        assert len(position) >= 5
        assert all(v <= 0 for v in position.values())
        assert all(k == k.strip() or not k.strip() for k in position)  # no leading-space markers
    assert sum(math.exp(v) for v in c.logprobs[0].values()) <= 1.0001


@pytest.mark.slow
def test_one_token_fast_path_equals_first_generated_token(local) -> None:
    prompts = ["Name a fruit.", "Say hello in French, then explain the word at length."]
    full = local.complete([ask(p, max_tokens=6, logprobs=True, top_logprobs=3) for p in prompts])
    one = local.complete([ask(p, max_tokens=1, logprobs=True, top_logprobs=3) for p in prompts])
    for f, o in zip(full, one, strict=True):
        assert o.completion_tokens == 1 and len(o.logprobs) == 1
        assert f.text.startswith(o.text) and o.text
        assert o.logprobs[0].keys() == f.logprobs[0].keys()
        for k, v in o.logprobs[0].items():
            assert v == pytest.approx(f.logprobs[0][k], abs=1e-3)


@pytest.mark.slow
def test_local_sampling_is_seeded_per_request(local) -> None:
    a, b, c = local.complete(
        [ask("Write a word.", max_tokens=8, temperature=1.0, seed=s) for s in (7, 7, 8)]
    )
    assert a.text == b.text
    assert a.error is None and c.error is None


@pytest.mark.slow
def test_local_failure_stays_on_its_item(local) -> None:
    bad = ask("Rate it.", max_tokens=1, logprobs=True, logprob_tokens=("not one token",))
    good = ask("Rate it.", max_tokens=1, logprobs=True, logprob_tokens=DIGITS)
    out = local.complete([bad, good])
    assert out[0].text is None and "single token" in out[0].error
    assert out[1].text is not None and out[1].error is None


def test_local_missing_path_names_it(tmp_path) -> None:
    from curation.llm.local import LocalModel

    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="no-such-model"):
        LocalModel(Local(path=str(missing)))


QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Paris.", "Bananas are purple and dogs can fly."),
    ("How many days are in a week?", "A week has seven days.", "Quantum toaster ninety window sings."),
    ("What color is the sky on a clear day?", "On a clear day the sky is blue.", "asdf qwerty zxcv uiop."),
]


@pytest.mark.slow
def test_rubric_judge_with_the_local_model_end_to_end(local) -> None:
    judge = RubricJudge("correctness", local, load_rubric("correctness"))
    items = [JudgeItem(f"User: {q}", a) for q, good, bad in QUESTIONS for a in (good, bad)]
    ratings = judge.rate(items)
    assert len(ratings) == len(items)
    for r in ratings:
        assert r.method == "logprobs" and r.error is None and r.attempts == 1
        assert 1 <= r.score <= 5
    # A 135M judge is noisy item by item (see BENCHMARKS.md); on average it must tell a right
    # answer from nonsense.
    good = sum(r.score for r in ratings[0::2]) / len(QUESTIONS)
    bad = sum(r.score for r in ratings[1::2]) / len(QUESTIONS)
    assert good > bad, ratings


# --------------------------------------------------------------------------- no model
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rating: 4", 4),
        ("**Rating:** 3", 3),
        ("The answer is fine.\nRating: 5", 5),
        ("4/5", 4),
        ("I'd give it 2 out of 5.", 2),
        ("Score: 1", 1),
        ("4", 4),
        (" **3**. ", 3),
        ('{"reason": "clear and right", "score": 5}', 5),
        ('```json\n{"score": 2, "reason": "vague"}\n```', 2),
        ("Rating: 2 ... on reflection, Rating: 4", 4),  # the last explicit rating wins
        ("Score: 3. Overall 5/5", 5),
        ("Rating: 7", None),  # out of range
        ("Rating: 0", None),
        ("10/10", None),
        ("Rated on a scale from 1 to 5, this is good. Rating: 4", 4),
        ("The answer lists 3 steps.", None),  # a number, not a rating
        ("", None),
        (None, None),
        ("no idea", None),
        # A sign is part of the number: a negative rating is out of range, never its absolute value.
        ("Rating: -5", None),
        ("Score: −4", None),  # a Unicode minus
        ('{"reason": "bad", "score": -3}', None),
        ("-4/5", None),
        ("-2", None),
        ("**Rating:** -5.", None),
        ("Score: 4\nOn reflection, Rating: -5", 4),  # out of range is ignored, like 7
        ("Rating - 4", 4),  # a dash set apart is punctuation
        ("Rating: 3-4", None),  # a range
    ],
)
def test_parse_rating(text, expected) -> None:
    assert parse_rating(text, 5) == expected


def test_parse_rating_respects_scale() -> None:
    assert parse_rating("Rating: 7", 9) == 7
    assert parse_rating("7/9", 9) == 7
    assert parse_rating("Rating: 4", 3) is None


def test_score_from_logprobs_is_the_expected_label() -> None:
    lp = [{"The": -0.1, "4": math.log(0.3), "5": math.log(0.1)}]
    assert score_from_logprobs(lp, 5) == pytest.approx((4 * 0.3 + 5 * 0.1) / 0.4)
    # the first position with any label counts; whitespace around labels is ignored
    lp = [{"Rating": -0.01, ":": -3.0}, {" 2": math.log(0.5), "3": math.log(0.5)}, {"5": 0.0}]
    assert score_from_logprobs(lp, 5) == pytest.approx(2.5)
    assert score_from_logprobs([{"The": -0.1}], 5) is None
    assert score_from_logprobs([{"1": -50.0}], 5) is None  # no label mass: read the text instead
    assert score_from_logprobs(None, 5) is None
    # The model is writing "-5": the digits' leftover mass is not its rating.
    assert score_from_logprobs([{"-": -0.05, "5": math.log(0.02), "4": math.log(0.01)}, {"5": 0.0}], 5) is None
    assert score_from_logprobs([{" −": -0.1, "3": -3.0}], 5) is None
    assert score_from_logprobs([{"4": -0.1, "-": -3.0}], 5) == 4  # a likelier label wins


def test_render_conversation() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    assert render_conversation(messages) == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Bye"


def test_rubrics_load_and_missing_rubric_names_itself(tmp_path) -> None:
    names = bundled_rubrics()
    for required in ("helpfulness", "correctness", "clarity", "instruction_following", "geval_plain"):
        assert required in names
    for name in (n for n in names if n != "pairwise"):
        judge = RubricJudge(name, ScriptedModel([]), load_rubric(name))
        text = judge.user_message(JudgeItem("User: What is 2+2?", "4"))
        assert "What is 2+2?" in text and text.rstrip().endswith(("4", ".", ":"))
        assert judge.user_message(JudgeItem("", "A raw document."))  # raw documents render too
    # The comparison rubric shows both answers, in the order given.
    pairwise = RubricJudge("p", ScriptedModel([]), load_rubric("pairwise"), scale_max=2, comparison=True)
    text = pairwise.user_message(JudgeItem("User: What is 2+2?", "It is 4.", "It is 5."))
    assert "What is 2+2?" in text and text.index("It is 4.") < text.index("It is 5.")
    path = tmp_path / "mine.jinja"
    path.write_text("Rate it: {{ answer }}")
    assert load_rubric(str(path)) == "Rate it: {{ answer }}"
    with pytest.raises(ConfigError, match="nope"):
        load_rubric("nope")
    with pytest.raises(ConfigError, match="template"):
        RubricJudge("bad", ScriptedModel([]), "{{ answr }}")


class ScriptedModel:
    """A ChatModel answering from a script: request i of the whole run gets answers[i]."""

    identity = "scripted"
    supports_json_schema = False
    supports_logprobs = False

    def __init__(self, answers: list[str | None], logprobs: bool = False) -> None:
        self.answers = list(answers)
        self.supports_logprobs = logprobs
        self.calls: list[list[ChatRequest]] = []
        self.usage = Usage()

    def complete(
        self, requests: Sequence[ChatRequest], on_done: OnDone | None = None, progress: str | None = None
    ) -> list[Completion]:
        self.calls.append(list(requests))
        out = []
        for i, _ in enumerate(requests):
            answer = self.answers.pop(0)
            if isinstance(answer, Completion):
                c = answer
            elif answer is None:
                c = Completion(text=None, error="http 500")
            else:
                c = Completion(text=answer)
            if on_done:
                on_done(i, c)
            out.append(c)
        return out


def test_reask_then_unparsable_keeps_order_and_raw_answers() -> None:
    # round 1: items 0..3; round 2: re-asks of 1 and 3; round 3: re-ask of 3
    model = ScriptedModel(
        ["Rating: 4", "I like it a lot", None, "Hmm.", "Okay then, Rating: 2", "Still thinking", "No rating, sorry"]
    )
    judge = RubricJudge("t", model, "Rate: {{ answer }}", reasks=2)
    items = [JudgeItem("User: q", f"answer {i}") for i in range(4)]
    ratings = judge.rate(items)
    assert [len(c) for c in model.calls] == [4, 2, 1]
    assert ratings[0] == Rating(4.0, "Rating: 4", "text", None, 1)
    assert ratings[1] == Rating(2.0, "Okay then, Rating: 2", "text", None, 2)
    assert ratings[2] == Rating(None, None, None, "http 500", 1)  # a failed call is not re-asked
    assert ratings[3] == Rating(None, "No rating, sorry", None, "unparsable", 3)
    # a re-ask continues the conversation: the previous answer, then a correction
    reask = model.calls[1][0].messages
    assert reask[0] == model.calls[0][1].messages[0]
    assert reask[1] == ("assistant", "I like it a lot") and reask[2][0] == "user"
    assert model.calls[2][0].messages[3] == ("assistant", "Still thinking")
    assert len({r.key() for call in model.calls for r in call}) == 7  # every request distinct


def test_logprob_mode_requests_and_fallback_to_text() -> None:
    good = Completion(text="4", logprobs=[{"4": math.log(0.6), "5": math.log(0.2), "The": math.log(0.2)}])
    no_labels = Completion(text="Rating: 3", logprobs=[{"Rating": -0.1}])
    model = ScriptedModel([good, no_labels, Completion(text="The", logprobs=[{"The": -0.1}]),
                           Completion(text="2", logprobs=[{"2": -0.01}])], logprobs=True)
    judge = RubricJudge("t", model, "Rate: {{ answer }}", reasks=1)
    ratings = judge.rate([JudgeItem("", "a"), JudgeItem("", "b"), JudgeItem("", "c")])
    request = model.calls[0][0]
    assert request.logprobs and request.logprob_tokens == DIGITS and request.max_tokens == 5
    assert ratings[0].score == pytest.approx(4.25) and ratings[0].method == "logprobs"
    assert (ratings[1].score, ratings[1].method) == (3.0, "text")
    assert (ratings[2].score, ratings[2].method, ratings[2].attempts) == (2.0, "logprobs", 2)


def test_long_texts_are_cut_and_say_so() -> None:
    judge = RubricJudge("t", ScriptedModel([]), "Q: {{ prompt }}\nA: {{ answer }}", max_chars=100)
    text = judge.user_message(JudgeItem("p" * 500 + "END", "a" * 90 + "b" * 500))
    assert CUT_MARK in text and "END" in text and "b" * 20 not in text
    assert len(text) < 400


def test_json_mode_schema_and_parse() -> None:
    model = ScriptedModel(['{"reason": "good", "score": 5}', '{"reason": "x", "score": 9}', "Rating: 2"])
    model.supports_json_schema = True
    judge = RubricJudge("t", model, "Rate: {{ answer }}", reasks=1)
    ratings = judge.rate([JudgeItem("", "a"), JudgeItem("", "b")])
    schema = model.calls[0][0].json_schema
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert schema["required"] == ["reason", "score"] and schema["additionalProperties"] is False
    assert (ratings[0].score, ratings[0].method) == (5.0, "json")
    assert (ratings[1].score, ratings[1].method, ratings[1].attempts) == (2.0, "text", 2)


def test_a_negative_rating_is_never_a_valid_one_in_any_mode() -> None:
    """Text, JSON and log-prob answers of "-5" are unparsable (re-asked, then None with the raw
    answer), never 5; a pairwise verdict of -1 on the 1..2 scale is no preference."""
    text = ScriptedModel(["Rating: -5", "Fine. Rating: –5"])  # an en dash as the minus
    rating = RubricJudge("t", text, "Rate: {{ answer }}", reasks=1).rate([JudgeItem("", "a")])[0]
    assert rating == Rating(None, "Fine. Rating: –5", None, "unparsable", 2)
    json_model = ScriptedModel(['{"reason": "awful", "score": -3}', "Rating: -3"])
    json_model.supports_json_schema = True
    assert RubricJudge("t", json_model, "Rate: {{ answer }}", reasks=1).rate([JudgeItem("", "a")])[0].score is None
    minus = [{"-": -0.05, "5": math.log(0.02)}, {"5": -0.01}]
    logprob = ScriptedModel([Completion(text="-5", logprobs=minus)] * 2, logprobs=True)
    assert RubricJudge("t", logprob, "Rate: {{ answer }}", reasks=1).rate([JudgeItem("", "a")])[0].score is None
    # Pairwise: A shown first gets "-1" (unreadable), the swap says 2 (A better): no verdict.
    pairwise = PairwiseJudge("p", ScriptedModel(["Rating: -1", "Rating: 2", "Rating: -1"]), "pairwise", reasks=1)
    (comparison,) = pairwise.compare([("q", "answer A", "answer B")])
    assert comparison.a_first is None and comparison.a_second == 0.5 and comparison.verdict == "tie"
