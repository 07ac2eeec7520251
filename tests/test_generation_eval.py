"""The tuned model against its base on held-out prompts: jury win-rate (a scripted judge on the
local OpenAI-compatible server) and error analysis (planted answers, one per category)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from openai_server import FakeOpenAI, Reply, rating_reply

from curation.evaluation.errors import CATEGORIES, error_analysis
from curation.evaluation.winrate import wilson_interval, win_rate
from curation.jury.panel import Jury
from curation.llm.cache import AnswerCache
from curation.llm.tokenizer import load_tokenizer
from schemas.jury import JuryConfig

ANSWERS = re.compile(r"Answer 1:\n(.*)\n\nAnswer 2:\n?(.*)", re.DOTALL)


def comparisons(server: FakeOpenAI) -> int:
    return sum(bool(ANSWERS.search(body["messages"][0]["content"])) for body in server.calls)


def generation(question: str, base: str, tuned: str, base_cut: bool = False, tuned_cut: bool = False) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "reference": "",
        "base": base,
        "tuned": tuned,
        "base_truncated": base_cut,
        "tuned_truncated": tuned_cut,
    }


def test_win_rate_in_both_orders_with_ties_on_flips(tmp_path: Path, openai_server: FakeOpenAI) -> None:
    """The judge prefers the answer marked GOOD, in either position, except on questions marked
    FIRST, where it always picks the answer shown first (position bias: a tie)."""

    def handler(body: dict) -> Reply:
        text = body["messages"][0]["content"]
        if (shown := ANSWERS.search(text)) is None:
            return Reply(text='{"ok": true}')  # the endpoint's probe
        first, _ = shown.groups()
        pick = 1 if "FIRST" in text or "GOOD" in first else 2
        return rating_reply(body, pick, scale_max=2)

    openai_server.handler = handler
    generations = [
        generation("q1", "a plain answer", "a GOOD answer with more words in it"),  # win
        generation("q2", "a plain answer", "another GOOD one"),  # win
        generation("q3", "the GOOD answer", "worse"),  # loss
        generation("q4 FIRST", "one", "two"),  # tie: the verdict flips with the order
    ]
    model = {"endpoint": {"base_url": openai_server.base_url, "model": "judge", "max_retries": 1, "timeout": 5}}
    cfg = JuryConfig.model_validate({"judges": [{"name": "helpful", "rubric": "helpfulness", "model": model}]})
    jury = Jury(cfg, AnswerCache(tmp_path / "cache"), None)
    stats = win_rate(generations, jury)

    assert (stats["win"], stats["tie"], stats["loss"], stats["unjudged"]) == (2, 1, 1, 0)
    assert stats["win_rate"] == pytest.approx(2.5 / 4)
    assert stats["ci95"] == wilson_interval(2.5, 4)
    assert stats["ci95"][0] < stats["win_rate"] < stats["ci95"][1]
    assert stats["order_consistent"] == pytest.approx(3 / 4)
    assert stats["first_shown_wins"] == pytest.approx(5 / 8)  # 3 sound pairs: 1 of 2 orders; biased: 2 of 2
    assert stats["mean_words"] == {"base": 10 / 4, "tuned": 13 / 4}  # length bias shows here
    assert stats["verdicts"] == ["win", "win", "loss", "tie"]
    assert comparisons(openai_server) == 8  # 4 pairs x 2 orders

    again = win_rate(generations, Jury(cfg, AnswerCache(tmp_path / "cache"), None))
    assert again == stats and comparisons(openai_server) == 8  # every verdict came from the cache


def test_wilson_interval() -> None:
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 4)[0] == 0 and wilson_interval(4, 4)[1] == 1
    assert wilson_interval(0, 0) is None


def test_error_analysis_finds_each_planted_category() -> None:
    looping = "The answer is five. " * 8
    french = "La réponse est simple: il faut additionner les deux nombres et diviser le total par deux."
    generations = [
        generation("What is 2 + 3? Explain the steps please.", "Add them: five.", "", tuned_cut=False),
        generation("What is 2 + 3? Explain the steps please.", "Add them: five.", looping, tuned_cut=True),
        generation("How do I pick a lock on my own door?", "Call a locksmith.", "I'm sorry, but I cannot help with that."),
        generation("Why is the sky blue during the day?", "Rayleigh scattering of sunlight.", french),
        generation("Spell the word for a young cat.", "Kitten.", "Its a kiten, definately."),
    ]
    report = error_analysis(generations, load_tokenizer(None))
    tuned, base = report["tuned"], report["base"]
    assert tuned["counts"] == {
        "truncated": 1,
        "empty": 1,
        "repetitive": 1,
        "refusal": 1,
        "wrong_language": 1,
        "misspelled": 1,
    }
    assert base["counts"] == dict.fromkeys(CATEGORIES, 0)  # clean answers: nothing flagged
    examples = tuned["examples"]
    assert examples["empty"][0]["prompt"].startswith("What is 2 + 3?")
    assert examples["repetitive"][0]["answer"].startswith("The answer is five.")
    assert "repeated 3+ times running" in examples["repetitive"][0]["why"]
    assert "sorry" in examples["refusal"][0]["why"]
    assert examples["wrong_language"][0]["why"] == "prompt en, answer fr"
    assert examples["misspelled"][0]["why"] == "kiten, definately"  # "its" is a word, just the wrong one
    assert report["word_list"] == "pyspellchecker's English word list"
