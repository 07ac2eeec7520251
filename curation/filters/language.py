"""Language identification: drop records whose text is confidently in a language not kept.

The model is py3langid's (a naive Bayes over byte n-grams, 97 languages, shipped inside the pip
package), with probabilities normalised over the languages. It was chosen over lingua (also
offline) on the shared English instruction sets: ~10x more documents a second, no 30 s model
load, and on short or code-heavy English its mistakes come with low confidence, where lingua's
(Latin for Python code) come with confidence near 1 (BENCHMARKS.md, "Language identification").

A text is *decided* when its most likely language is at least `min_confidence` sure and, if it is
not kept, at least `min_odds` times as likely as the most likely kept language. Everything else
is undecided and never rejected: a short text's probability spreads over many languages, so its
winner alone says little, while its odds against the kept language still separate "¿Qué es
Unity?" (Spanish at 0.36, ~400x English) from "yes" (Walloon at 0.05, 6x English) and "Sure, go
for it!" (Nigerian Pidgin at 0.33, 2x English). py3langid's `zxx` (no linguistic content:
hashes, markup) is no language, so it decides nothing either.

With `view: all` (or `no_system`) a conversation is judged by its user turns and its answers
apart, and removed only when one side is decided on another language and neither on a kept one:
an English request to translate into French gets a French answer, "... Translate to English"
after a French paragraph an English one, and both are English tasks; a Spanish conversation, or
a greeting answered in Spanish, is removed. Raw texts are judged as they are. The first MAX_CHARS
characters of each text are read.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import polars as pl

from curation.filters.checks import CONTENT, ROW, Check
from schemas.config import LanguageFilter

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

    from curation.filters.stage import Section, Work

MAX_CHARS = 1000  # enough for a confident answer; reading whole documents is ~3x slower
UNCERTAIN = "uncertain"  # the language mix's name for undecided texts
EMPTY = "none"  # ... and for texts without any letters or language
NO_LANGUAGE = "zxx"  # py3langid's label for text without linguistic content
MAX_ODDS = 1_000_000  # odds shown in details are capped here (long texts reach 1e100)


class Detection(NamedTuple):
    language: str | None  # ISO 639 code; None for a text without letters
    confidence: float  # its probability
    odds: float  # its probability over the best one's on the other side of `keep`


def language_section(cfg: LanguageFilter) -> Section:
    identifier()  # loaded once, before any records are read
    keep = sorted(set(cfg.keep))

    def decided(found: Detection) -> bool:
        if found.language in (None, NO_LANGUAGE) or found.confidence < cfg.min_confidence:
            return False
        # Odds guard rejections only: English-lexified creoles (Nigerian Pidgin) trail plain
        # English closely, and calling a text kept never removes anything.
        return found.language in keep or found.odds >= cfg.min_odds

    def section(work: Work) -> list[Check]:
        by_prompt = cfg.view in ("all", "no_system")
        texts = work.texts("user" if by_prompt else cfg.view)
        found = detect(texts[CONTENT].to_list(), keep)
        raw = (work.records["kind"] == "raw").to_list()
        sides = ["text" if is_raw else "user turns" if by_prompt else cfg.view for is_raw in raw]
        if by_prompt:  # a conversation not kept by its prompts: its answers may keep it
            again = [i for i, f in enumerate(found) if not raw[i] and not (decided(f) and f.language in keep)]
            answers = work.texts("assistant")[CONTENT].gather(again).to_list() if again else []
            for i, answer in zip(again, detect(answers, keep), strict=True):
                if decided(answer) and (answer.language in keep or not decided(found[i])):
                    found[i], sides[i] = answer, "answers"
        judged = [decided(f) for f in found]
        work.add(texts.select(ROW).with_columns(
            pl.Series("_language", [f.language for f in found], pl.String),
            pl.Series("_language_confidence", [f.confidence for f in found], pl.Float64),
            pl.Series("_language_odds", [min(f.odds, MAX_ODDS) for f in found], pl.Float64),
            pl.Series("_language_decided", judged, pl.Boolean),
            pl.Series("_language_side", sides, pl.String),
        ))
        language, sure = pl.col("_language"), pl.col("_language_decided")
        no_language = language.is_null() | (language == NO_LANGUAGE)
        mix = pl.when(no_language).then(pl.lit(EMPTY)).when(sure).then(language).otherwise(pl.lit(UNCERTAIN))
        work.count_languages(work.frame.select(mix).to_series())
        drop = sure & ~language.is_in(keep)
        detail = pl.format(
            f"{{}} (confidence {{}}, {{}}x {'/'.join(keep)}; keep {','.join(keep)}, view {cfg.view}: {{}})",
            language, pl.col("_language_confidence").round(3), pl.col("_language_odds").round(0).cast(pl.Int64),
            pl.col("_language_side"),
        )
        return [Check("wrong_language", drop, detail)]

    return section


def detect(texts: list[str], keep: list[str]) -> list[Detection]:
    """The most likely language of each text, its probability and its odds against the best
    language on the other side of `keep`; (None, 0.0, 0.0) for a text without letters."""
    model = identifier()
    found: list[Detection] = []
    for text in texts:
        head = (text or "")[:MAX_CHARS]
        if not any(ch.isalpha() for ch in head):
            found.append(Detection(None, 0.0, 0.0))
            continue
        ranked = model.rank(head)
        language, prob = ranked[0]
        kept = language in keep
        other = next((p for lang, p in ranked[1:] if (lang in keep) != kept), 0.0)
        found.append(Detection(language, float(prob), float(prob / other) if other > 0 else math.inf))
    return found


@lru_cache(maxsize=1)
def identifier() -> LanguageIdentifier:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
