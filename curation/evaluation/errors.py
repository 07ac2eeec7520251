"""Error analysis of generated answers: how many of the base and of the tuned model's answers
on the held-out prompts fall into each category, with examples.

- truncated: the answer ran into max_new_tokens without an end token (the trainer says which);
- empty: nothing but whitespace;
- repetitive: the repetition filter's checks (lines in a loop, top word n-gram share) with the
  run's `filters.repetition` settings, else that filter's defaults, on answers of at least
  `MIN_WORDS_REPETITIVE` words (the filter's own allowance for conversations, 100 words, would
  exempt every answer cut at a few dozen new tokens);
- refusal: a phrase of the bundled refusal / boilerplate list (`filters.keywords.refusals`);
- wrong_language: py3langid names another language for the answer than for the prompt (both at
  least `MIN_WORDS_FOR_LANGUAGE` words);
- misspelled: words of letters that are neither one token of the model's tokenizer nor in
  pyspellchecker's English word list (so: likely misspellings; not looked for in an answer
  already in the wrong language).
An answer can be in several categories.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING

import polars as pl

from curation.filters.stage import build_filter_stage
from schemas.config import Filters, KeywordFilter, RepetitionFilter
from schemas.record import records_frame

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CATEGORIES = ("truncated", "empty", "repetitive", "refusal", "wrong_language", "misspelled")
SIDES = ("base", "tuned")
MAX_EXAMPLES = 3  # per category and side
EXCERPT = 300
MIN_WORDS_FOR_LANGUAGE = 5  # shorter texts are too short to identify reliably
MIN_WORDS_REPETITIVE = 10
WORD = re.compile(r"[A-Za-z]{3,}")
WORD_LIST = "pyspellchecker's English word list"


def error_analysis(
    generations: Sequence[Mapping], tokenizer: PreTrainedTokenizerBase, repetition: RepetitionFilter | None = None
) -> dict:
    """Per side (base, tuned): answers, a count per category, each answer's categories (in the
    generations' order), and up to MAX_EXAMPLES examples per category (prompt, answer excerpt, why)."""
    prompts = [_last_user(g["prompt"]) for g in generations]
    result: dict = {"categories": list(CATEGORIES), "word_list": WORD_LIST}
    for side in SIDES:
        answers = [g[side] for g in generations]
        found = _categorise(prompts, answers, [bool(g[f"{side}_truncated"]) for g in generations], tokenizer, repetition)
        result[side] = {
            "answers": len(answers),
            "counts": {c: sum(c in f for f in found) for c in CATEGORIES},
            "flags": [sorted(f) for f in found],  # per answer, its categories: what paired intervals resample
            "examples": {
                c: [
                    {"prompt": prompts[i][:EXCERPT], "answer": answers[i][:EXCERPT], "why": f[c]}
                    for i, f in enumerate(found)
                    if c in f
                ][:MAX_EXAMPLES]
                for c in CATEGORIES
            },
        }
    return result


def _categorise(
    prompts: list[str],
    answers: list[str],
    truncated: list[bool],
    tokenizer: PreTrainedTokenizerBase,
    repetition: RepetitionFilter | None,
) -> list[dict[str, str]]:
    """Per answer: {category: why} for the categories it falls into."""
    found: list[dict[str, str]] = [{} for _ in answers]
    rules = repetition or RepetitionFilter()
    rules = rules.model_copy(update={"min_words": {**rules.min_words, "sft": MIN_WORDS_REPETITIVE}})
    filters = {
        "repetitive": Filters(repetition=rules, placeholders=None),
        "refusal": Filters(keywords=KeywordFilter(refusals=True, view="assistant"), placeholders=None),
    }
    for category, cfg in filters.items():
        for i, detail in _flagged(prompts, answers, cfg).items():
            found[i][category] = detail
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        if truncated[i]:
            found[i]["truncated"] = "no end token within max_new_tokens"
        if not answer.strip():
            found[i]["empty"] = "no text"
            continue
        if (languages := _languages(prompt, answer)) is not None:
            found[i]["wrong_language"] = f"prompt {languages[0]}, answer {languages[1]}"
        elif unknown := _unknown_words(answer, tokenizer):  # English words only
            found[i]["misspelled"] = ", ".join(unknown[:8])
    return found


def _flagged(prompts: list[str], answers: list[str], cfg: Filters) -> dict[int, str]:
    """Answers the filter stage configured by `cfg` would remove, by index: its detail."""
    rows = [
        {
            "id": str(i),
            "source": f"generation#{i}",
            "kind": "sft",
            "text": None,
            "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
            "chosen": None,
            "rejected": None,
            "meta": "{}",
        }
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True))
    ]
    if not rows:
        return {}
    rejected = build_filter_stage(cfg)(records_frame(rows)).rejected
    assert isinstance(rejected, pl.DataFrame)
    return {int(i): detail for i, detail in zip(rejected["id"], rejected["detail"], strict=True)}


def _languages(prompt: str, answer: str) -> tuple[str, str] | None:
    """(prompt language, answer language) when both are long enough and they differ."""
    if min(len(prompt.split()), len(answer.split())) < MIN_WORDS_FOR_LANGUAGE:
        return None
    import py3langid

    asked, answered = py3langid.classify(prompt)[0], py3langid.classify(answer)[0]
    return (asked, answered) if asked != answered else None


def _unknown_words(answer: str, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    words = dict.fromkeys(w.lower() for w in WORD.findall(answer))  # in order, once each
    unknown = [w for w in words if not _one_token(tokenizer, w)]
    return sorted(_spelling().unknown(unknown), key=unknown.index) if unknown else []


def _one_token(tokenizer: PreTrainedTokenizerBase, word: str) -> bool:
    return any(len(tokenizer.encode(form, add_special_tokens=False)) == 1 for form in (word, " " + word))


@cache
def _spelling():  # noqa: ANN202 - pyspellchecker has no type hints
    from spellchecker import SpellChecker

    return SpellChecker(language="en")


def _last_user(turns: Sequence[Mapping]) -> str:
    return next((t["content"] for t in reversed(turns) if t["role"] == "user"), "")
