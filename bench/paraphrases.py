"""A labelled paraphrase set built offline: real instructions and questions from ../shared/data,
each rewritten by the bundled SmolLM2-135M-Instruct, and kept only when the rewrite passes checks.

    .venv/bin/python -m bench.paraphrases [--sources 300]    # builds (or reads) the set, prints a sample

Sources (in this order, `--sources` in all, a third of each): GSM8K test questions (the same style
throughout, so they are hard negatives for one another), Alpaca instructions with their input,
and self-instruct instructions. The model gets a few-shot "paraphrase, never answer" prompt at
temperature 0, then up to two seeded samples at 0.8 for the sources whose rewrite failed the
checks; a 135M model often answers, repeats itself or copies, so a rewrite is kept only
when it is not the source again (after case and punctuation), has 0.6x-1.6x the source's words,
repeats no word 3-gram, carries no answer markers ("####", "the answer is"), and shares between
25% and 85% of its distinct words with the source (on topic, but reworded). These checks are
lexical only (no embedding model votes on the labels, so no contender is favoured), and each is
counted in `build().dropped` (for the sources that failed every attempt: the last reason).

The labelled pairs are (source, its kept rewrite); every other pair of texts in the set is a
negative. Answers are cached like every LLM call of the product (AnswerCache under
`<cache>/bench-llm`), so a second build costs seconds.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

ATTEMPTS = 3
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WORD = re.compile(r"\w+")
SYSTEM = (
    "You are a paraphrasing tool. You never answer, solve or continue anything: you restate the"
    " user's text in other words, with the same meaning and every number and name kept."
)
SHOTS = (
    ("What is the capital of France?", "Which city is the capital of France?"),
    (
        "Tom has 3 apples and buys 5 more. How many apples does he have now?",
        "Tom owns 3 apples and then purchases another 5. How many apples does he own at this point?",
    ),
    ("Write a short poem about the sea.", "Compose a brief poem on the subject of the ocean."),
)


@dataclass(frozen=True)
class ParaphraseSet:
    texts: list[str]  # sources first, then the kept rewrites
    pairs: list[tuple[int, int]]  # (source index, rewrite index) into texts
    dropped: dict[str, int]  # rewrites rejected, by check

    def labelled(self) -> set[frozenset[int]]:
        return {frozenset(p) for p in self.pairs}


def sources(n: int) -> list[str]:
    third = n // 3
    gsm8k = [json.loads(line)["question"] for line in (SHARED / "sft" / "gsm8k_test.jsonl").open()]
    alpaca = [
        (r["instruction"] + ("\n" + r["input"] if r["input"] else "")).strip()
        for r in json.loads((SHARED / "sft" / "llamafactory_alpaca_en_demo.json").read_text())
    ]
    selfinstruct = [
        json.loads(line)["instruction"] for line in (SHARED / "sft" / "selfinstruct_user_oriented_252.jsonl").open()
    ]
    picked = gsm8k[:third] + alpaca[:third] + selfinstruct[: n - 2 * third]
    seen: set[str] = set()
    return [t for t in picked if not (_norm(t) in seen or seen.add(_norm(t)))]  # type: ignore[func-returns-value]


def build(n_sources: int = 300, progress: bool = True) -> ParaphraseSet:
    texts = sources(n_sources)
    found, dropped = rewrites(texts, progress)
    kept = sorted(found)
    return ParaphraseSet(texts + [found[i] for i in kept], [(i, len(texts) + k) for k, i in enumerate(kept)], dropped)


def rewrites(texts: list[str], progress: bool = True, attempts: int = ATTEMPTS) -> tuple[dict[int, str], dict[str, int]]:
    """The bundled model's checked rewrite of each text it managed one for (by index), and the
    rewrites dropped by check, after `attempts` tries. Answers come from (and go to) the bench-llm cache."""
    from curation.llm.cache import AnswerCache, CachedModel
    from curation.llm.local import LocalModel
    from curation.llm.types import ChatRequest
    from schemas.bundled import cache_dir
    from schemas.jury import Local

    shots = tuple(m for q, a in SHOTS for m in (("user", f"Paraphrase: {q}"), ("assistant", a)))
    requests = [
        ChatRequest(messages=(("system", SYSTEM), *shots, ("user", f"Paraphrase: {t}")), temperature=0.0, max_tokens=96)
        for t in texts
    ]
    model = CachedModel(LocalModel(Local(batch_size=16)), AnswerCache(cache_dir() / "bench-llm"))
    found: dict[int, str] = {}
    dropped: Counter[str] = Counter()
    for attempt in range(attempts):  # greedy first, then seeded samples for the sources still without one
        todo = [i for i in range(len(texts)) if i not in found]
        batch = [requests[i] if attempt == 0 else replace(requests[i], temperature=0.8, seed=attempt) for i in todo]
        desc = f"paraphrases (attempt {attempt + 1})" if progress else None
        for i, answer in zip(todo, model.complete(batch, progress=desc), strict=True):
            rewrite = (answer.text or "").strip().strip('"').strip()
            problem = _problem(texts[i], rewrite)
            if problem is None:
                found[i] = rewrite
            elif attempt == attempts - 1:
                dropped[problem] += 1
    return found, dict(dropped)


def _norm(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def _problem(source: str, rewrite: str) -> str | None:
    src, new = WORD.findall(source.lower()), WORD.findall(rewrite.lower())
    if not new or _norm(rewrite) == _norm(source):
        return "copy_or_empty"
    if not 0.6 <= len(new) / len(src) <= 1.6:
        return "length"
    grams = [tuple(new[i : i + 3]) for i in range(len(new) - 2)]
    if len(grams) != len(set(grams)):
        return "repeats"
    if "####" in rewrite or "the answer is" in rewrite.lower():
        return "answers"
    a, b = set(src), set(new)
    if not 0.25 <= len(a & b) / len(a | b) <= 0.85:
        return "overlap"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=300)
    args = parser.parse_args()
    built = build(args.sources)
    print(f"{len(built.pairs)} labelled pairs from {len(built.texts) - len(built.pairs)} sources; dropped {built.dropped}")
    for a, b in built.pairs[:: max(1, len(built.pairs) // 8)]:
        print(f"- {built.texts[a]!r}\n  {built.texts[b]!r}")


if __name__ == "__main__":
    main()
