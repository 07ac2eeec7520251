"""Build the labelled sets of the decision benchmark (bench/decisions/*.jsonl) from public data.

    .venv/bin/python -m bench.build_decisions --mirrors /work/.mirror

Not needed to run the benchmark (the sets are committed); it documents how every item was made
and labelled, and rebuilds the sets from the same sources. Sources are git snapshots (read with
`git show COMMIT:PATH`) and ../shared/data; see bench/decisions/README.md for origins and
licences. Labels come from the source (oasst `lang`), from construction (planted PII, a broken
copy of a valid JSON answer, a degenerate loop appended to a real answer, a Markdown document
cut inside a code block) or from an explicit rule over real answers that was checked by reading
(refusals vs mentions, what a prompt asks for). Everything is seeded: a rebuild is identical.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "decisions"
SHARED = ROOT.parents[1] / "shared" / "data"

# (mirror folder, commit, short name for origins)
ALPACA_EVAL = ("tatsu-lab+alpaca_eval", "cd543a149df89434d8a54582c0151c0b945c3d20", "tatsu-lab/alpaca_eval")
OASST2 = ("Open-Paws+Datasets", "2bf9eaa", "Open-Paws/Datasets")
LLAMA_FACTORY = ("hiyouga+LLaMA-Factory", "ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30", "hiyouga/LLaMA-Factory")
GPTEACHER = ("gururise+AlpacaDataCleaned", "791174f63efa9aa54ca6c38639dc6e5bb5657d80", "gururise/AlpacaDataCleaned")
FASTAPI = ("tiangolo+fastapi", "6d9dc39fc", "tiangolo/fastapi")
OPEN_ASSISTANT = ("LAION-AI+Open-Assistant", "f1e6ed9526f5817531f3ab85441a40b3671ddccb", "LAION-AI/Open-Assistant")
# alpaca_eval model outputs on its 805 instructions: strong and weak, chat-tuned and not.
AE_MODELS = (
    "gpt-3.5-turbo-0301", "gpt4_0314", "claude-2", "llama-2-7b-chat-hf", "llama-2-13b-chat-hf",
    "llama-2-70b-chat-hf", "vicuna-7b", "vicuna-13b", "falcon-7b-instruct", "falcon-40b-instruct",
    "pythia-12b-mix-sft", "oasst-sft-pythia-12b", "guanaco-7b", "baize-v2-7b", "alpaca-7b",
    "chatglm2-6b", "baichuan-13b-chat", "Qwen1.5-1.8B-Chat", "openbuddy-falcon-7b-v6",
)

MIRRORS = Path("/work/.mirror")


def git_show(source: tuple[str, str, str], path: str) -> str:
    repo = MIRRORS / source[0] / "repo"
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{source[1]}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def origin(source: tuple[str, str, str], path: str, where: str = "") -> str:
    return f"{source[2]}@{source[1][:8]}:{path}" + (f"#{where}" if where else "")


def item(rule: str, reason: str, label: str, origin_: str, group: str, *, prompt: str | None = None,
         answer: str | None = None, text: str | None = None, **extra) -> dict:
    out: dict[str, str | None] = {"rule": rule, "reason": reason, "label": label, "group": group, "origin": origin_}
    if text is not None:
        out["text"] = text
    else:
        out["prompt"], out["answer"] = prompt, answer
    return {**out, **extra}


# ---------------------------------------------------------------- sources as (origin, prompt, answer)

def alpaca_eval() -> Iterator[tuple[str, str, str]]:
    for model in AE_MODELS:
        path = f"results/{model}/model_outputs.json"
        for i, row in enumerate(json.loads(git_show(ALPACA_EVAL, path))):
            if row.get("output"):
                yield origin(ALPACA_EVAL, path, str(i)), row["instruction"], row["output"]


_ALL: list[tuple[str, str, str]] = []


def alpaca_eval_all() -> list[tuple[str, str, str]]:
    """Every model's outputs in the snapshot (228 models): the wider pool for the rarer kinds
    of answer (mentions, JSON-looking text, songs, collected loops). Read once."""
    if not _ALL:
        repo = MIRRORS / ALPACA_EVAL[0] / "repo"
        listing = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", ALPACA_EVAL[1], "results/"],
                                 check=True, capture_output=True, text=True).stdout.split()
        for path in sorted(p for p in listing if p.endswith("/model_outputs.json")):
            try:
                rows = json.loads(git_show(ALPACA_EVAL, path))
            except (subprocess.CalledProcessError, ValueError):
                continue  # a file the snapshot lacks (too large)
            _ALL.extend((origin(ALPACA_EVAL, path, str(i)), row["instruction"], row["output"])
                        for i, row in enumerate(rows) if isinstance(row.get("output"), str) and row["output"].strip())
    return _ALL


def shared_alpaca(name: str) -> Iterator[tuple[str, str, str]]:
    for i, row in enumerate(json.loads((SHARED / "sft" / name).read_text())):
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        yield f"shared/data/sft/{name}#{i}", prompt, row["output"]


def gpteacher(kind: str, file: str) -> Iterator[tuple[str, str, str]]:
    path = f"dataset_extensions/GPTeacher/{kind}/{file}"
    for i, row in enumerate(json.loads(git_show(GPTEACHER, path))):
        prompt = (row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")).strip()
        yield origin(GPTEACHER, path, str(i)), prompt, row["output"]


def oasst_roots() -> Iterator[tuple[dict, str]]:
    """Every oasst tree's first message, with the origin prefix of its messages."""
    path = "open_assistant/oasst2_filtered.jsonl"
    for line in git_show(OASST2, path).splitlines():
        yield json.loads(line)["prompt"], origin(OASST2, path) + "#"
    for line in (SHARED / "sft" / "oasst_en_100_tree.jsonl").read_text().splitlines():
        yield json.loads(line)["prompt"], "shared/data/sft/oasst_en_100_tree.jsonl#"


def oasst_pairs() -> Iterator[tuple[str, str, str, str, str]]:
    """(origin, prompt, answer, prompt lang, answer lang) of every assistant reply."""
    def walk(message: dict, where: str) -> Iterator[tuple[str, str, str, str, str]]:
        for reply in message.get("replies") or []:
            if reply["role"] == "assistant" and message["role"] == "prompter":
                yield (f"{where}{reply['message_id']}", message["text"], reply["text"],
                       message.get("lang") or "", reply.get("lang") or "")
            yield from walk(reply, where)

    for root, where in oasst_roots():
        yield from walk(root, where)


def oasst_messages() -> Iterator[tuple[str, str, str]]:
    """(origin, text, lang) of every message."""
    def walk(message: dict, where: str) -> Iterator[tuple[str, str, str]]:
        yield f"{where}{message['message_id']}", message["text"], message.get("lang") or ""
        for reply in message.get("replies") or []:
            yield from walk(reply, where)

    for root, where in oasst_roots():
        yield from walk(root, where)


def llama_factory_alpaca(name: str) -> Iterator[tuple[str, str, str]]:
    path = f"data/{name}"
    for i, row in enumerate(json.loads(git_show(LLAMA_FACTORY, path))):
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        yield origin(LLAMA_FACTORY, path, str(i)), prompt, row["output"]


def english_pairs() -> list[tuple[str, str, str]]:
    return [*alpaca_eval(), *shared_alpaca("llamafactory_alpaca_en_demo.json"),
            *gpteacher("Roleplay", "roleplay-simple-deduped-roleplay-dataset.json"),
            *gpteacher("Toolformer", "toolformer-dedupe-only-dataset.json"),
            *((o, p, a) for o, p, a, lp, la in oasst_pairs() if lp == la == "en")]


# ---------------------------------------------------------------- keywords: refusals vs mentions

# The assistant speaking of itself as an AI / a language model, or declining the task. Broader
# than the bundled phrase list on purpose: it defines the truth, the list is what is measured.
SELF_AS_AI = re.compile(
    r"(?i)\bas an ai\b|\bas a(?:n ai)? (?:large )?language model\b|as an artificial intelligence"
    r"|\bi(?:'m| am) (?:just |only |merely |simply |but )?(?:an? )?(?:simple |mere |humble )?(?:ai|artificial intelligence|(?:large )?language model|computer program|chatbot|virtual assistant)\b"
    r"|\b(?:language model|an ai|ai model|ai assistant)s? like me\b"
    r"|\bi(?:'m| am) (?:sorry|afraid),? (?:but )?i (?:can(?:not|'t)|am unable|'m unable|am not able|don't have|do not have|won't)"
    r"|\bi apologi[sz]e,? but (?:i|as)\b"
    r"|\bi (?:cannot|can't|am unable to|'m unable to|am not able to|'m not able to|won't|will not) (?:provide|fulfill|assist|help|comply|answer|create|generate|browse|access|write|do that|engage|support|give|produce|predict|draw|see|view|play|perform|complete|make)"
    r"|\bi do(?:n't| not) have (?:personal|the ability|the capability|access to|real-time|feelings|emotions|opinions|a physical|the capacity)"
    r"|\bmy (?:knowledge cutoff|training data)\b"
    r"|\b(?:responsible|ethical|helpful|trained|advanced|open-source|self-aware) (?:and \w+ )?(?:artificial intelligence |ai )?language model\b"
    r"|\bi'm \w+, an ai assistant\b|\bbeing a (?:large )?language model\b|\bcall me an ai\b|\band i are both ai\b"
)
# Answers whose truth is unclear (an assistant comparing itself with ChatGPT, a role the prompt
# asked for): left out of the set rather than guessed.
AMBIGUOUS = re.compile(r"(?i)\bas capable as\b|\bi(?:'m| am) not as\b|between me and|me my sibling|call me openai|i am not capable of"
                       r"|(?:similar|comparable) to chatgpt")
AI_ROLE_PROMPT = re.compile(r"(?i)\b(?:you are|imagine you are|as|pretend to be|act as) an? (?:\w+ )?(?:ai|artificial intelligence)\b")
MENTION = re.compile(r"(?i)\bopenai\b|\bchat ?gpt\b|\bgpt-?[234](?:\.5)?\b|\binstructgpt\b|\blanguage models?\b")


def _folded(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


def refusal_set(rng: random.Random) -> list[dict]:
    removes, keeps = [], []
    for where, prompt, answer in [*english_pairs(), *alpaca_eval_all()]:
        if AMBIGUOUS.search(answer) or AI_ROLE_PROMPT.search(prompt):
            continue
        if SELF_AS_AI.search(answer):
            # The target names this phrase: its answers are a group of their own.
            group = "as_an_ai_language_model" if "as an ai language model" in _folded(answer) else "other_refusal_or_ai_boilerplate"
            removes.append(item("keywords", "excluded_keyword", "remove", where, group, prompt=prompt, answer=answer))
        elif MENTION.search(answer):
            keeps.append(item("keywords", "excluded_keyword", "keep", where, "mentions_ai_without_refusing",
                              prompt=prompt, answer=answer))
    return _sample(removes, 300, rng) + _sample(keeps, 300, rng)


def _sample(items: list[dict], n: int, rng: random.Random, per_prompt: int = 4) -> list[dict]:
    """n items at most, and at most `per_prompt` answers to one prompt (alpaca_eval asks its
    805 questions of every model), so no single question dominates a side."""
    rng.shuffle(items)
    seen: Counter[str] = Counter()
    chosen = []
    for it in items:
        key = it.get("prompt") or ""
        if seen[key] < per_prompt:
            seen[key] += 1
            chosen.append(it)
    return chosen[:n]


# ---------------------------------------------------------------- format json: JSON vs JSON-looking

ASKS_JSON = re.compile(r"(?i)\bjson\b")


def _valid_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _break_json(text: str, rng: random.Random) -> tuple[str, str]:
    """A broken copy of a valid JSON document, broken the ways generated JSON breaks."""
    ways = ["truncated", "single_quotes", "trailing_comma", "unquoted_keys", "python_literals"]
    rng.shuffle(ways)
    for way in ways:
        if way == "truncated" and len(text) > 20:
            broken = text[: rng.randint(len(text) // 2, len(text) - 2)]
        elif way == "single_quotes" and '"' in text:
            broken = text.replace('"', "'")
        elif way == "trailing_comma" and re.search(r"[\]}\"\d]\s*\n?\s*[}\]]\s*$", text):
            broken = re.sub(r"(\s*[}\]]\s*)$", r",\1", text)
        elif way == "unquoted_keys" and re.search(r'"(\w+)"\s*:', text):
            broken = re.sub(r'"(\w+)"\s*:', r"\1:", text)
        elif way == "python_literals" and re.search(r"\b(true|false|null)\b", text):
            broken = re.sub(r"\b(true|false|null)\b", lambda m: {"true": "True", "false": "False", "null": "None"}[m.group(1)], text)
        else:
            continue
        if not _valid_json(broken.strip()):
            return broken, way
    return "", ""


def json_set(rng: random.Random) -> list[dict]:
    removes, keeps, valid = [], [], []
    pools = [*english_pairs(), *shared_alpaca("code_alpaca_2k.json"), *alpaca_eval_all()]
    for where, prompt, answer in pools:
        stripped = answer.strip()
        if not stripped.startswith(("[", "{")):
            continue
        is_valid = _valid_json(stripped)
        if ASKS_JSON.search(prompt):
            if is_valid:
                valid.append((where, prompt, stripped))
                keeps.append(item("format", "invalid_json", "keep", where, "json_requested_valid", prompt=prompt, answer=answer))
            else:
                removes.append(item("format", "invalid_json", "remove", where, "json_requested_broken", prompt=prompt, answer=answer))
        elif is_valid:
            valid.append((where, prompt, stripped))
            keeps.append(item("format", "invalid_json", "keep", where, "json_unrequested_valid", prompt=prompt, answer=answer))
        else:
            keeps.append(item("format", "invalid_json", "keep", where, "json_looking_not_json", prompt=prompt, answer=answer))
    # Tool calls: the function-call turns of the glaive set are JSON by contract.
    glaive = json.loads((SHARED / "sft" / "llamafactory_glaive_toolcall_en_demo.json").read_text())
    for i, row in enumerate(glaive):
        turns = row["conversations"]
        for j, turn in enumerate(turns):
            if turn["from"] == "function_call" and _valid_json(turn["value"]) and turns[j - 1]["from"] == "human":
                valid.append((f"shared/data/sft/llamafactory_glaive_toolcall_en_demo.json#{i}.{j}",
                              turns[j - 1]["value"] + "\n\nAnswer with the function call as JSON.", turn["value"]))
    for where, prompt, text in rng.sample(valid, min(200, len(valid))):
        broken, way = _break_json(text, rng)
        if broken:
            removes.append(item("format", "invalid_json", "remove", where + f" ({way} copy)", f"broken_{way}",
                                prompt=prompt, answer=broken))
    looking = [k for k in keeps if k["group"] == "json_looking_not_json"]
    others = [k for k in keeps if k["group"] != "json_looking_not_json"]
    return removes + _sample(looking, 250, rng) + others


# ---------------------------------------------------------------- repetition: spam vs songs, poems, tables

MAX_CHARS = 6000  # longer answers are left out: the sets stay a few MB
SONG = re.compile(r"(?i)\b(song|lyrics?|poem|poetry|rap|verse|chorus|haiku|limerick|sonnet|ballad|jingle|hymn|anthem|rhyme|stanza|ode)s?\b")
TABLE = re.compile(r"(?m)^\s*\|.*\|\s*$")
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _words(text: str) -> int:
    return len(text.split())


def _loop(answer: str, rng: random.Random) -> tuple[str, str]:
    """A degenerate generation: the answer up to some sentence, then that sentence (or line)
    again and again (how sampling loops look), repeated text 50-85% of the result."""
    lines = [line for line in answer.split("\n") if line.strip()]
    if rng.random() < 0.4 and len(lines) >= 3:
        cut = rng.randint(1, len(lines) - 1)
        head, unit, sep = "\n".join(lines[:cut]), lines[cut - 1], "\n"
        how = "line_loop"
    else:
        sentences = [s for s in SENTENCE.split(answer.strip()) if s]
        if len(sentences) < 2:
            return "", ""
        cut = rng.randint(1, len(sentences) - 1)
        head, unit, sep = " ".join(sentences[:cut]), sentences[cut - 1], " "
        how = "sentence_loop"
    share = rng.uniform(0.5, 0.85)
    repeats = max(3, round(share / (1 - share) * _words(head) / max(1, _words(unit))))
    return head + sep + sep.join([unit] * repeats), how


def _gutenberg_poems() -> Iterator[tuple[str, str]]:
    for name in ("blake-poems.txt", "whitman-leaves.txt", "milton-paradise.txt"):
        text = (SHARED / "raw" / "gutenberg" / name).read_text(encoding="utf-8", errors="replace")
        # Poems are separated by titles in capitals or by 2+ blank lines; take stanza groups of 60-400 words.
        chunks, current = [], []
        for block in re.split(r"\n\s*\n", text):
            current.append(block.strip("\n"))
            if _words("\n\n".join(current)) >= 60:
                chunks.append("\n\n".join(current))
                current = []
        for i, chunk in enumerate(chunks):
            if _words(chunk) <= 400:
                yield f"shared/data/raw/gutenberg/{name}#chunk{i}", chunk


def _collected_loop(answer: str) -> bool:
    """A real degenerate answer: one sentence of 8+ words 8 times or more, and repeated
    sentences at least 40% of the words."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?\n])\s+", answer) if _words(s) >= 8]
    counts = Counter(sentences)
    if not counts or counts.most_common(1)[0][1] < 8:
        return False
    repeated = sum(_words(s) * (n - 1) for s, n in counts.items() if n > 1)
    return repeated >= 0.4 * _words(answer)


def _word_run(text: str) -> int:
    """The longest run of one word repeated back to back (punctuation and case aside)."""
    best, run, last = 0, 0, None
    for word in re.findall(r"\w+", text.lower()):
        run = run + 1 if word == last else 1
        best, last = max(best, run), word
    return best


def repetition_set(rng: random.Random) -> list[dict]:
    keeps, sources, collected = [], [], []
    for where, prompt, answer in [*english_pairs(), *alpaca_eval_all()]:
        if len(answer) > MAX_CHARS:
            continue
        if _collected_loop(answer) and not SONG.search(prompt):
            collected.append(item("repetition", "repetition", "remove", where, "collected_loop", prompt=prompt, answer=answer))
            continue
        words = _words(answer)
        if _word_run(answer) >= 10:
            continue  # "oppose, oppose, oppose, ...": degenerate even where a song was asked for
        if SONG.search(prompt) and words >= 100:
            keeps.append(item("repetition", "repetition", "keep", where, "song_or_poem_answer", prompt=prompt, answer=answer))
        elif len(TABLE.findall(answer)) >= 5 and words >= 100:
            keeps.append(item("repetition", "repetition", "keep", where, "table_answer", prompt=prompt, answer=answer))
        elif 80 <= words <= 400:
            sources.append((where, prompt, answer))
    keeps = _sample(keeps, 350, rng)
    poems = list(_gutenberg_poems())
    keeps += [item("repetition", "repetition", "keep", where, "public_domain_poem", text=text)
              for where, text in rng.sample(poems, min(80, len(poems)))]
    removes = []
    for where, prompt, answer in rng.sample(sources, 200):
        looped, how = _loop(answer, rng)
        if looped:
            removes.append(item("repetition", "repetition", "remove", where + f" ({how} appended)", how,
                                prompt=prompt, answer=looped))
    return removes[:150] + _sample(collected, 80, rng) + keeps


# ---------------------------------------------------------------- language: other languages vs English

def language_set(rng: random.Random) -> list[dict]:
    removes, keeps = [], []
    for where, prompt, answer, lp, la in oasst_pairs():
        if lp != la or not la:
            continue
        lang = la.split("-")[0]
        if lang == "en":
            keeps.append(item("language", "wrong_language", "keep", where, "oasst_en", prompt=prompt, answer=answer, lang="en"))
        else:
            removes.append(item("language", "wrong_language", "remove", where, f"oasst_{lang}", prompt=prompt, answer=answer, lang=lang))
    keeps = rng.sample(keeps, min(250, len(keeps)))
    zh = list(llama_factory_alpaca("alpaca_zh_demo.json"))
    removes += [item("language", "wrong_language", "remove", w, "alpaca_zh", prompt=p, answer=a, lang="zh")
                for w, p, a in rng.sample(zh, 60)]
    # Short English answers, and English tasks whose answer is in another language.
    short, translate = [], []
    for where, prompt, answer in [*shared_alpaca("llamafactory_alpaca_en_demo.json"), *shared_alpaca("code_alpaca_2k.json"),
                                  *alpaca_eval()]:
        if re.search(r"(?i)\btranslat", prompt):
            continue  # translation tasks: from the wider pool below
        elif _words(answer) <= 8 and _words(prompt) <= 40 and not re.search(r"[^\x00-\x7f]", prompt + answer):
            short.append(item("language", "wrong_language", "keep", where, "short_english_answer", prompt=prompt, answer=answer, lang="en"))
    for where, prompt, answer in [*shared_alpaca("code_alpaca_2k.json"), *english_pairs()]:
        if re.search(r"(?i)\btranslat", prompt):
            translate.append(item("language", "wrong_language", "keep", where, "english_translation_task", prompt=prompt, answer=answer, lang="en"))
    keeps += rng.sample(short, min(200, len(short))) + _sample(translate, 120, rng)
    # Documentation paragraphs, labelled by the folder of their language.
    by_lang: dict[str, list[dict]] = {}
    for where, para, lang in _doc_paragraphs():
        by_lang.setdefault(lang, []).append(item("language", "wrong_language", "remove" if lang != "en" else "keep",
                                                 where, f"docs_paragraph_{lang}", text=para, lang=lang))
    for lang, paras in sorted(by_lang.items()):
        removes_or_keeps = keeps if lang == "en" else removes
        removes_or_keeps += rng.sample(paras, min(100 if lang == "en" else 25, len(paras)))
    # Single short messages (5 words or fewer), as users write them.
    for where, text, lang in oasst_messages():
        base = lang.split("-")[0]
        if 0 < _words(text) <= 5 and base:
            (keeps if base == "en" else removes).append(
                item("language", "wrong_language", "keep" if base == "en" else "remove", where,
                     "short_message_en" if base == "en" else "short_message_other", text=text, lang=base))
    return removes + keeps


DOC_LANGS = ("en", "es", "zh", "ja", "de", "ru", "pt", "ko")


def _doc_paragraphs() -> Iterator[tuple[str, str, str]]:
    """Prose paragraphs (no code, tables, includes or admonitions) of the FastAPI docs, with the
    language of their folder."""
    for where, text in _markdown_docs():
        if "tiangolo/fastapi" not in where:
            continue
        lang = where.split(":docs/")[1].split("/")[0]
        prose = FENCED.sub("", text)
        for i, para in enumerate(re.split(r"\n\s*\n", prose)):
            para = para.strip()
            if (30 <= len(para) <= 1500 and not re.match(r"[#|<{/!*-]|\d+\.", para)
                    and "{*" not in para and "///" not in para and len(re.findall(r"\w", para)) > len(para) // 2):
                yield f"{where}#para{i}", para, lang


# ---------------------------------------------------------------- length: CJK messages vs too short

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def length_set(rng: random.Random) -> list[dict]:
    # Chinese, Japanese and Thai are written without spaces between words: a message of 15+
    # characters is a sentence; Korean spaces its words.
    removes, keeps, english = [], [], []
    for where, text, lang in oasst_messages():
        base = lang.split("-")[0]
        chars = len(re.sub(r"\s", "", text))
        if base in ("zh", "ja", "ko", "th") and chars >= 15:
            keeps.append(item("length", "too_few_words", "keep", where, f"oasst_{base}_15plus_chars", text=text, lang=base))
        elif base in ("zh", "ja") and 0 < chars <= 4:
            removes.append(item("length", "too_few_words", "remove", where, f"{base}_1_4_chars", text=text, lang=base))
        elif base not in ("en", "zh", "ja", "ko", "th") and 0 < _words(text) < 3:
            removes.append(item("length", "too_few_words", "remove", where, "other_language_1_2_words", text=text, lang=base))
        elif base == "en":
            if _words(text) < 3:
                removes.append(item("length", "too_few_words", "remove", where, "english_1_2_words", text=text, lang="en"))
            else:
                english.append(item("length", "too_few_words", "keep", where, "english_3plus_words", text=text, lang="en"))
    for where, prompt, answer in llama_factory_alpaca("alpaca_zh_demo.json"):
        for side, text in (("instruction", prompt), ("output", answer)):
            chars = len(re.sub(r"\s", "", text))
            if chars >= 15 and len(CJK.findall(text)) >= chars // 2:
                keeps.append(item("length", "too_few_words", "keep", f"{where}.{side}", "alpaca_zh_15plus_chars", text=text, lang="zh"))
            elif 0 < chars <= 4 and CJK.search(text):
                removes.append(item("length", "too_few_words", "remove", f"{where}.{side}", "zh_1_4_chars", text=text, lang="zh"))
    keeps = rng.sample(keeps, min(300, len(keeps))) + rng.sample(english, 100)
    cjk_docs = [item("length", "too_few_words", "keep", w, f"docs_paragraph_{lang}", text=t, lang=lang)
                for w, t, lang in _doc_paragraphs() if lang in ("zh", "ja", "ko") and len(CJK.findall(t)) >= 15]
    keeps += rng.sample(cjk_docs, min(120, len(cjk_docs)))
    for where, _prompt, answer in shared_alpaca("llamafactory_alpaca_en_demo.json"):
        if 0 < _words(answer) < 3:
            removes.append(item("length", "too_few_words", "remove", where, "english_1_2_words", text=answer, lang="en"))
    return removes + keeps


# ---------------------------------------------------------------- paragraph split + code fences

FENCE = re.compile(r"(?m)^[ \t]*```")
FENCED = re.compile(r"(?ms)^[ \t]*```.*?^[ \t]*```[^\n]*$")


def _markdown_docs() -> Iterator[tuple[str, str]]:
    repo = MIRRORS / FASTAPI[0] / "repo"
    files = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", FASTAPI[1], "docs/"],
                           check=True, capture_output=True, text=True).stdout.split()
    for path in files:
        if path.endswith(".md") and path.split("/")[1] in DOC_LANGS:
            yield origin(FASTAPI, path), git_show(FASTAPI, path)
    for path in ("README.md", "README_zh.md", "data/README.md", "data/README_zh.md"):
        yield origin(LLAMA_FACTORY, path), git_show(LLAMA_FACTORY, path)


def fence_set(rng: random.Random) -> list[dict]:
    docs = [(w, t) for w, t in _markdown_docs()
            if len(FENCE.findall(t)) >= 2 and len(FENCE.findall(t)) % 2 == 0 and len(t) <= 8_000]
    docs = rng.sample(docs, min(160, len(docs)))
    keeps = [item("txt_paragraph+format_code", "unbalanced_code_fence", "keep", w, "markdown_with_fences", text=t)
             for w, t in docs]
    removes = []
    for where, text in rng.sample(docs, min(80, len(docs))):
        fences = [m.start() for m in FENCE.finditer(text)]
        k = rng.randrange(0, len(fences), 2)  # an opening fence
        end = fences[k + 1]
        body = text[fences[k]:end]
        lines = body.split("\n")
        cut = fences[k] + len("\n".join(lines[: max(2, rng.randint(2, max(2, len(lines) - 1)))]))
        removes.append(item("txt_paragraph+format_code", "unbalanced_code_fence", "remove", where + " (cut inside a code block)",
                            "document_cut_inside_fence", text=text[:cut].rstrip() + "\n"))
    return removes + keeps


# ---------------------------------------------------------------- PII: planted strings vs technical text

FIRST = ["james", "maria", "wei", "aisha", "olga", "rahul", "sofia", "lukas", "emma", "kenji", "fatima", "diego", "chloe", "noah"]
LAST = ["smith", "garcia", "zhang", "okafor", "ivanova", "sharma", "rossi", "muller", "martin", "tanaka", "khan", "silva", "dubois", "brown"]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.co.uk", "web.de", "orange.fr", "protonmail.com", "acme-corp.com", "uni-heidelberg.de", "company.io", "hotmail.com"]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def _phone(rng: random.Random) -> tuple[str, str]:
    area = f"{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}"
    exch = f"{rng.randint(2, 9)}{_digits(rng, 2)}"
    line = _digits(rng, 4)
    formats = [
        ("us_parens", f"({area}) {exch}-{line}"), ("us_dashes", f"{area}-{exch}-{line}"),
        ("us_dots", f"{area}.{exch}.{line}"), ("us_plus1", f"+1 {area} {exch} {line}"),
        ("us_plus1_dashes", f"+1-{area}-{exch}-{line}"),
        ("uk_london_intl", f"+44 20 7{_digits(rng, 3)} {_digits(rng, 4)}"),
        ("uk_mobile_national", f"07{rng.randint(4, 9)}{_digits(rng, 2)} {_digits(rng, 6)}"),
        ("uk_mobile_intl", f"+44 7{rng.randint(4, 9)}{_digits(rng, 2)} {_digits(rng, 6)}"),
        ("de_intl", f"+49 30 {_digits(rng, 8)}"), ("de_mobile_intl", f"+49 15{rng.randint(1, 9)} {_digits(rng, 8)}"),
        ("de_national", f"030 {_digits(rng, 8)}"),
        ("fr_intl", f"+33 {rng.randint(1, 7)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)}"),
        ("fr_national", f"0{rng.choice([1, 6, 7])} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)}"),
        ("in_mobile_intl", f"+91 {rng.randint(6, 9)}{_digits(rng, 4)} {_digits(rng, 5)}"),
        ("in_mobile_national", f"0{rng.randint(6, 9)}{_digits(rng, 4)} {_digits(rng, 5)}"),
        ("au_intl", f"+61 2 {_digits(rng, 4)} {_digits(rng, 4)}"),
        ("jp_intl", f"+81 3-{_digits(rng, 4)}-{_digits(rng, 4)}"),
        ("br_mobile_intl", f"+55 11 9{_digits(rng, 4)}-{_digits(rng, 4)}"),
    ]
    return rng.choice(formats)


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _card(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["visa", "mastercard", "amex", "discover"])
    if kind == "amex":
        n = _luhn_complete(rng.choice(["34", "37"]), 15, rng)
        return "card_amex", rng.choice([f"{n[:4]} {n[4:10]} {n[10:]}", n, f"{n[:4]}-{n[4:10]}-{n[10:]}"])
    prefix = {"visa": "4", "mastercard": str(rng.randint(51, 55)), "discover": "6011"}[kind]
    n = _luhn_complete(prefix, 16, rng)
    groups = [n[i:i + 4] for i in range(0, 16, 4)]
    return f"card_{kind}", rng.choice([" ".join(groups), "-".join(groups), n])


def _alnum(rng: random.Random, n: int, alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _secret(rng: random.Random) -> tuple[str, str]:
    return rng.choice([
        ("openai_key", "sk-proj-" + _alnum(rng, 48)), ("openai_key_legacy", "sk-" + _alnum(rng, 48)),
        ("aws_key_id", "AKIA" + _alnum(rng, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
        ("github_token", "ghp_" + _alnum(rng, 36)), ("slack_token", f"xoxb-{_digits(rng, 12)}-{_digits(rng, 13)}-{_alnum(rng, 24)}"),
        ("google_api_key", "AIza" + _alnum(rng, 35, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")),
        ("hf_token", "hf_" + _alnum(rng, 34)), ("stripe_key", "sk_live_" + _alnum(rng, 24)),
        ("gitlab_token", "glpat-" + _alnum(rng, 20)),
    ])


def _pii_value(rng: random.Random) -> tuple[str, str, str]:
    kind = rng.choice(["email", "phone", "phone", "ip", "credit_card", "secret"])
    if kind == "email":
        sep = rng.choice([".", "_", "", "."])
        value = f"{rng.choice(FIRST)}{sep}{rng.choice(LAST)}{rng.choice(['', str(rng.randint(1, 99)), '+work'])}@{rng.choice(DOMAINS)}"
        return kind, "email", value
    if kind == "phone":
        fmt, value = _phone(rng)
        return kind, fmt, value
    if kind == "ip":
        while True:
            parts = [rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)]
            if parts[0] not in (10, 127, 100, 169, 172, 192, 198, 203):
                return kind, "ipv4_public", ".".join(map(str, parts))
    if kind == "credit_card":
        fmt, value = _card(rng)
        return kind, fmt, value
    fmt, value = _secret(rng)
    return kind, fmt, value


CARRIERS = {
    "email": ["Contact me at {v} if you have questions.", "My email is {v}.", "Send the report to {v} by Friday.", 'EMAIL = "{v}"'],
    "phone": ["Call me at {v} tomorrow.", "You can reach the office on {v}.", "Phone: {v}", "my number is {v}, text me"],
    "ip": ["The server is at {v} and listens on port 8080.", "ssh deploy@{v}", "Our VPN gateway is {v}.", 'HOST = "{v}"'],
    "credit_card": ["Card number: {v}, expiry 09/27.", "I paid with {v} yesterday.", "card: {v}"],
    "secret": ['OPENAI_API_KEY = "{v}"', "export TOKEN={v}", "Use this key: {v}", 'headers = {{"Authorization": "Bearer {v}"}}'],
}

DIGITS = re.compile(r"\d[\d.,:()\- ]{5,}\d|@|\d+\.\d+\.\d+")


def _technical_texts() -> Iterator[tuple[str, str]]:
    for where, prompt, answer in shared_alpaca("code_alpaca_2k.json"):
        yield where, f"{prompt}\n\n{answer}"
    for pep in sorted((SHARED / "raw" / "peps").glob("pep-*.rst")):
        text = pep.read_text(encoding="utf-8")
        body = text.split("\n\n", 1)[-1]  # the header holds authors' real addresses
        for i, para in enumerate(re.split(r"\n\s*\n", body)):
            if 20 <= _words(para) <= 300:
                yield f"shared/data/raw/peps/{pep.name}#para{i}", para
    for where, _prompt, answer, _lang_prompt, la in oasst_pairs():
        if la == "en" and "```" in answer:
            yield where, answer


REAL_EMAIL = re.compile(r"[\w.+-]+@(?!example\.|.*\.example\b|.*\.test\b|localhost)[\w-]+\.[\w.]+")


def pii_set(rng: random.Random) -> list[dict]:
    candidates = [(w, t) for w, t in _technical_texts() if DIGITS.search(t) and not REAL_EMAIL.search(t)]
    rng.shuffle(candidates)
    clean = candidates[:400]
    planted_into = candidates[400:700]
    keeps = [item("pii", "pii", "keep", w, "technical_text_no_pii", text=t) for w, t in clean]
    removes = []
    for where, text in planted_into:
        kind, fmt, value = _pii_value(rng)
        sentence = rng.choice(CARRIERS[kind]).format(v=value)
        paras = text.split("\n\n")
        at = rng.randint(0, len(paras))
        new = "\n\n".join([*paras[:at], sentence, *paras[at:]])
        removes.append(item("pii", "pii", "remove", where + " (PII planted)", f"{kind}:{fmt}", text=new,
                            planted=value, kind=kind))
    return removes + keeps


# ---------------------------------------------------------------- placeholders: junk answers vs short ones
# Alpaca's generation prompt (tatsu-lab/stanford_alpaca generate_instruction.py) writes each task as
# "###\n{n}. Instruction: ...\n{n}. Input:\n...\n{n}. Output:\n..." with "<noinput>" for no input; its
# training prompt as "### Instruction:\n...\n\n### Response:\n". A model that learnt from unparsed
# generations continues an answer with the next such record.
PLACEHOLDER_TOKENS = ("<noinput>", "<nooutput>", "<No Input>", "noinput", "Noinput", "No input", "No output",
                      "N/A", "n/a", "<no output>")
EMPTY_LIKE = re.compile(r"^[\W_]*$")  # nothing but punctuation, spaces, invisible characters
_LINE_FIELD = re.compile(r"(?mi)^[ \t]*(?:#+[ \t]*)?(?:\d+\.[ \t]*)?(instruction|input|output|response)[ \t]*:")
_EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")


def _alpaca_block(n: int, row: dict, separator: str) -> str:
    return (f"\n{separator}\n{n}. Instruction: {row['instruction']}\n{n}. Input:\n{row['input'] or '<noinput>'}\n"
            f"{n}. Output:\n{row['output']}")


def placeholder_set(rng: random.Random) -> list[dict]:
    alpaca = json.loads((SHARED / "sft" / "llamafactory_alpaca_en_demo.json").read_text())
    where = "shared/data/sft/llamafactory_alpaca_en_demo.json#"
    removes, keeps = [], []
    # Real answers of nothing but invisible characters or punctuation (alpaca_eval models).
    short = [(o, p, a) for o, p, a in alpaca_eval_all() if len(a.strip()) <= 3]
    for o, p, a in short:
        if EMPTY_LIKE.match(a) and not _EMOJI.search(a):
            removes.append(item("placeholders", "placeholders", "remove", o, "empty_like_real", prompt=p, answer=a))
        elif a.strip().lower() in {t.lower() for t in PLACEHOLDER_TOKENS}:  # read: "N/A" to a real question
            removes.append(item("placeholders", "placeholders", "remove", o, "placeholder_token_real",
                                prompt=p, answer=a))
        else:  # "Yes", "C", "No", "Red", emoji: real short answers
            keeps.append(item("placeholders", "placeholders", "keep", o, "short_real_answer", prompt=p, answer=a))
    for o, p, a in alpaca_eval_all():  # read: ASCII art asked for, no letter in it
        if len(a.strip()) > 20 and EMPTY_LIKE.match(a) and re.search(r"(?i)ascii|\bdraw", p):
            keeps.append(item("placeholders", "placeholders", "keep", o, "punctuation_drawing", prompt=p, answer=a))
    order = list(range(len(alpaca)))
    rng.shuffle(order)
    for k, i in enumerate(order[:60]):  # Alpaca's placeholder tokens as the whole answer
        row = alpaca[i]
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        removes.append(item("placeholders", "placeholders", "remove", f"{where}{i} (placeholder answer)",
                            "placeholder_token", prompt=prompt, answer=PLACEHOLDER_TOKENS[k % len(PLACEHOLDER_TOKENS)]))
    for k, i in enumerate(order[60:150]):  # a real answer, then the next record of a template
        row, nxt = alpaca[i], alpaca[order[150 + k]]
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        if k % 3:
            leak, group = _alpaca_block(rng.randint(2, 20), nxt, rng.choice(["###", "##"])), "leaked_generation_template"
        else:
            leak, group = f"\n\n### Instruction:\n{nxt['instruction']}\n\n### Response:\n{nxt['output']}", "leaked_training_prompt"
        removes.append(item("placeholders", "placeholders", "remove", f"{where}{i} (template appended)", group,
                            prompt=prompt, answer=row["output"].rstrip() + leak))
    for o, p, a in alpaca_eval_all():
        fields = [f.lower() for f in _LINE_FIELD.findall(a)]
        if "instruction" in fields and len(fields) >= 2:  # read: alpaca-7b continuing its generation prompt
            removes.append(item("placeholders", "placeholders", "remove", o, "leaked_generation_template_real",
                                prompt=p, answer=a))
        elif "input" in fields and "output" in fields:  # read: worked examples, pipeline steps ("1. Input:")
            keeps.append(item("placeholders", "placeholders", "keep", o, "input_output_examples", prompt=p, answer=a))
    for name, rows in (("llamafactory_alpaca_en_demo.json", alpaca),
                       ("code_alpaca_2k.json", json.loads((SHARED / "sft" / "code_alpaca_2k.json").read_text()))):
        for i, row in enumerate(rows):
            if _LINE_FIELD.search(row["output"]):  # "Output:\n[9, 7, 6]" after a code block
                keeps.append(item("placeholders", "placeholders", "keep", f"shared/data/sft/{name}#{i}",
                                  "input_output_examples", prompt=row["instruction"], answer=row["output"]))
    recipes = [(o, p, a) for o, p, a in alpaca_eval_all()
               if re.search(r"(?mi)^[ \t]*(?:#+[ \t]*|\*\*)?instructions\**[ \t]*:", a)]
    na = [(o, p, a) for o, p, a in alpaca_eval_all() if re.search(r"\bN/A\b", a) and len(a) > 40]
    for group, pool, n in (("instructions_heading", recipes, 60), ("n_a_inside_answer", na, 40)):
        for o, p, a in rng.sample(pool, min(n, len(pool))):
            keeps.append(item("placeholders", "placeholders", "keep", o, group, prompt=p, answer=a))
    return removes + _sample(keeps, 400, rng, per_prompt=6)


# ---------------------------------------------------------------- truncated: cut answers vs answers ending open

# Answers known complete: alpaca_eval's strongest models (no max-token cuts in their outputs), oasst2
# human replies in every language (Open-Paws; not the shared English trees, which the rule was
# checked on), Alpaca-GPT4-zh and GPTeacher. The rule was written against ../shared/data's
# alpaca_en_demo, code_alpaca, oasst_en_100_tree, glaive and self-instruct: none of them is used here.
STRONG_MODELS = ("gpt4_0314", "claude-2", "gpt-3.5-turbo-0301")
ENDS_CLOSED = re.compile(r"(?:[.!?。！？…]|```|~~~)[\"'”’)\]*_]*\s*$")
LAST_LINE = re.compile(r"([^\n]*)\s*$")
EMOJI_OR_URL = re.compile(r"(?:[\U0001F300-\U0001FAFF\u2600-\u27BF]\ufe0f?|https?://\S+|www\.\S+)\s*$")
ANSWER_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s")


def _cut(answer: str, rng: random.Random, by: str) -> str | None:
    """The answer cut at a random word boundary or character, past its first 5 words and before
    its end; None when the cut lands after closing punctuation or a closing fence (a shorter
    complete-looking answer, which no rule reading the text alone can tell from a whole one)."""
    if by == "word":
        spans = [m.end() for m in re.finditer(r"\S+", answer)]
        if len(spans) < 8:
            return None
        end = rng.choice(spans[5:-1])
    else:
        first = min(len(answer) - 2, max(10, len(" ".join(answer.split()[:5]))))
        if first >= len(answer) - 2:
            return None
        end = rng.randrange(first, len(answer) - 1)
    cut = answer[:end].rstrip()
    return None if ENDS_CLOSED.search(cut) or len(cut) < 10 else cut


def _complete_group(prompt: str, answer: str) -> str | None:
    """What kind of near miss a complete answer is, by how it ends (None: an ordinary one)."""
    found = LAST_LINE.search(answer.rstrip())
    assert found is not None  # the pattern matches every string (at worst empty, at its end)
    last = found.group(1).strip()
    if answer.rstrip().endswith(("```", "~~~")):
        return "closed_code_block"
    if len(answer.split()) <= 3:
        return "short_answer"
    if last.startswith("|"):
        return "table"
    if EMOJI_OR_URL.search(answer):
        return "emoji_or_url"
    if SONG.search(prompt):
        return "poem_or_song"
    if answer.rstrip().endswith("$$") or "$" in last or re.search(r"[\d=]\s*$", last):
        return "math_or_number"
    if answer.rstrip().endswith(("}", "]")):
        return "json_or_bracket"
    if ANSWER_LIST_ITEM.match(last):
        return "list_item_last"
    if last.startswith("#") or re.search(r"\w$", last):
        return "ends_without_punctuation"
    return None


def truncated_set(rng: random.Random) -> list[dict]:
    strong = [(o, p, a) for o, p, a in alpaca_eval() if any(f"results/{m}/" in o for m in STRONG_MODELS)]
    oasst = [(o, p, a, la.split("-")[0]) for o, p, a, lp, la in oasst_pairs() if o.startswith("Open-Paws")]
    zh = list(llama_factory_alpaca("alpaca_zh_demo.json"))
    teacher = list(gpteacher("Toolformer", "toolformer-dedupe-only-dataset.json"))
    pools = {
        "en": [(o, p, a) for o, p, a in strong if len(a) <= MAX_CHARS] + [(o, p, a) for o, p, a, lang in oasst if lang == "en"],
        "other_lang": [(o, p, a) for o, p, a, lang in oasst if lang not in ("en", "zh")],
        "zh": zh + [(o, p, a) for o, p, a, lang in oasst if lang == "zh"],
        "code": [(o, p, a) for o, p, a in strong if a.count("```") >= 2 and len(a) <= MAX_CHARS],
        "toolformer": teacher,
    }
    removes: list[dict] = []
    for pool, n in (("en", 90), ("other_lang", 60), ("zh", 40), ("toolformer", 20)):
        for by in ("word", "char"):
            for o, p, a in rng.sample(pools[pool], min(len(pools[pool]), 3 * n)):
                cut = _cut(a, rng, by)
                if cut and sum(it["group"] == f"cut_{by}_{pool}" for it in removes) < n // 2 + n % 2 * (by == "word"):
                    removes.append(item("truncated", "truncated_answer", "remove", o + f" (cut at a {by})",
                                        f"cut_{by}_{pool}", prompt=p, answer=cut))
    # Code answers cut inside a fenced block (a generation that ran out while writing code).
    for o, p, a in rng.sample(pools["code"], min(len(pools["code"]), 40)):
        blocks = [m.span() for m in re.finditer(r"(?ms)^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", a)]
        start, end = blocks[0]
        inner = [m.end() for m in re.finditer(r"\S+", a[start:end])][2:-2]
        if inner:
            removes.append(item("truncated", "truncated_answer", "remove", o + " (cut inside a code block)",
                                "cut_in_code_block", prompt=p, answer=a[: start + rng.choice(inner)]))
    keeps = []
    by_group: dict[str, list[dict]] = {}
    for pool in ("en", "other_lang", "zh", "code", "toolformer"):
        for o, p, a in pools[pool]:
            group = _complete_group(p, a) or f"complete_{pool}"
            by_group.setdefault(group, []).append(item("truncated", "truncated_answer", "keep", o, group, prompt=p, answer=a))
    for _group, items in sorted(by_group.items()):
        keeps += _sample(items, 40, rng, per_prompt=2)
    return removes + keeps


SETS = {
    "keywords_refusals": refusal_set,
    "format_json": json_set,
    "repetition": repetition_set,
    "language": language_set,
    "length_cjk": length_set,
    "markdown_fences": fence_set,
    "pii": pii_set,
    "placeholders": placeholder_set,
    "truncated": truncated_set,
}


def main() -> None:
    global MIRRORS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirrors", type=Path, default=MIRRORS, help="folder of owner+name/repo git mirrors")
    parser.add_argument("--only", nargs="*", choices=sorted(SETS))
    args = parser.parse_args()
    MIRRORS = args.mirrors
    OUT.mkdir(exist_ok=True)
    for name, build in SETS.items():
        if args.only and name not in args.only:
            continue
        items = build(random.Random(f"decisions-{name}"))
        seen, unique = set(), []
        for it in items:
            key = (it.get("prompt"), it.get("answer"), it.get("text"))
            if key not in seen:
                seen.add(key)
                unique.append(it)
        for i, it in enumerate(unique):
            it["id"] = f"{name}-{i:04d}"
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for it in unique:
                f.write(json.dumps({"id": it.pop("id"), **it}, ensure_ascii=False) + "\n")
        counts = {label: sum(it["label"] == label for it in unique) for label in ("remove", "keep")}
        print(f"{name}: {len(unique)} items, {counts}")


if __name__ == "__main__":
    main()
