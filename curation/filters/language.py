"""Language identification: drop records whose text is confidently in a language not kept.

The model is py3langid's (a naive Bayes over byte n-grams, 97 languages, shipped inside the pip
package), with probabilities normalised over the languages. It was chosen over lingua (also
offline) on the shared English instruction sets: ~10x more documents a second, no 30 s model
load, and on short or code-heavy English its mistakes come with low confidence, where lingua's
(Latin for Python code) come with confidence near 1 (BENCHMARKS.md, "Language identification").
A record is rejected only when the detected language is not in `keep` and its probability is at
least `min_confidence`; the first MAX_CHARS characters of the view text are read.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import polars as pl

from curation.filters.checks import CONTENT, ROW, Check
from schemas.config import LanguageFilter

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

    from curation.filters.stage import Section, Work

MAX_CHARS = 1000  # enough for a confident answer; reading whole documents is ~3x slower
UNCERTAIN = "uncertain"  # the language mix's name for detections below min_confidence
EMPTY = "none"  # ... and for texts without any letters


def language_section(cfg: LanguageFilter) -> Section:
    identifier()  # loaded once, before any records are read
    keep = sorted(set(cfg.keep))

    def section(work: Work) -> list[Check]:
        texts = work.texts(cfg.view)
        found = detect(texts[CONTENT].to_list())
        work.add(texts.select(ROW).with_columns(
            pl.Series("_language", [lang for lang, _ in found], pl.String),
            pl.Series("_language_confidence", [p for _, p in found], pl.Float64),
        ))
        language, confidence = pl.col("_language"), pl.col("_language_confidence")
        sure = confidence >= cfg.min_confidence
        mix = pl.when(language.is_null()).then(pl.lit(EMPTY)).when(sure).then(language).otherwise(pl.lit(UNCERTAIN))
        work.count("languages", work.frame.select(mix).to_series())
        drop = sure & ~language.is_in(keep)
        detail = pl.format(f"{{}} (confidence {{}}, keep {','.join(keep)}, view {cfg.view})", language, confidence.round(3))
        return [Check("wrong_language", drop, detail)]

    return section


def detect(texts: list[str]) -> list[tuple[str | None, float]]:
    """(ISO 639-1 code, probability) per text; (None, 0.0) for a text without letters."""
    model = identifier()
    found: list[tuple[str | None, float]] = []
    for text in texts:
        head = (text or "")[:MAX_CHARS]
        if not any(ch.isalpha() for ch in head):
            found.append((None, 0.0))
            continue
        lang, prob = model.classify(head)
        found.append((lang, float(prob)))
    return found


@lru_cache(maxsize=1)
def identifier() -> LanguageIdentifier:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
