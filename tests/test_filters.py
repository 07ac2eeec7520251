"""The filter stage: each reason fires on a crafted record and not on a clean one; the first
failing check names the reason; kept rows keep RECORD_SCHEMA and input order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from curation.core.stage import StageResult
from curation.filters import REFUSAL_PHRASES, PhraseMatcher, build_filter_stage, read_phrases
from schemas.config import ConfigError, Filters
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA, Record, records_frame

CLEAN = "The quick brown fox jumps over the lazy dog near the quiet river bank today."


def raw(id: str, text: str) -> dict[str, Any]:
    return Record(id=id, source=f"test:{id}", kind="raw", text=text).to_row()


def sft(id: str, *turns: str) -> dict[str, Any]:
    """A conversation of alternating user / assistant turns."""
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
    return Record(id=id, source=f"test:{id}", kind="sft", messages=messages).to_row()


def pref(id: str, prompt: str, chosen: str, rejected: str) -> dict[str, Any]:
    return Record(
        id=id,
        source=f"test:{id}",
        kind="preference",
        messages=[{"role": "user", "content": prompt}],
        chosen=[{"role": "assistant", "content": chosen}],
        rejected=[{"role": "assistant", "content": rejected}],
    ).to_row()


def run(config: dict, rows: list[dict[str, Any]]) -> StageResult:
    records = records_frame(rows)
    result = build_filter_stage(Filters.model_validate(config))(records)  # Stage checks invariants
    assert result.kept.schema == pl.Schema(RECORD_SCHEMA)
    assert result.rejected.columns == list(REJECT_SCHEMA)
    assert result.kept.height + result.rejected.height == records.height
    return result


def outcome(config: dict, rows: list[dict[str, Any]]) -> dict[str, tuple[str, str] | None]:
    """id -> (reason, detail), or None when kept."""
    result = run(config, rows)
    removed = {r["id"]: (r["reason"], r["detail"]) for r in result.rejected.iter_rows(named=True)}
    return {row["id"]: removed.get(row["id"]) for row in rows}


def test_no_sections_keep_everything() -> None:
    rows = [raw("a", "x"), sft("b", "hi", "{broken"), raw("c", "dup\ndup\ndup")]
    result = run({}, rows)
    assert result.kept.equals(records_frame(rows))
    assert result.rejected.height == 0


# --- length ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "bad", "ok", "reason", "detail"),
    [
        ({"min_words": 3}, "two words", "three words here", "too_few_words", "2 words < min_words 3"),
        (
            {"max_words": 3},
            "one two three four",
            "one two three",
            "too_many_words",
            "4 words > max_words 3",
        ),
        ({"min_chars": 10}, "tiny", "ten chars!", "too_few_chars", "4 chars < min_chars 10"),
        ({"max_chars": 10}, "twelve chars", "ten chars!", "too_many_chars", "12 chars > max_chars 10"),
    ],
)
def test_record_length_bounds(bounds: dict, bad: str, ok: str, reason: str, detail: str) -> None:
    assert outcome({"length": bounds}, [raw("bad", bad), raw("ok", ok)]) == {
        "bad": (reason, detail),
        "ok": None,
    }


def test_words_are_whitespace_separated_tokens() -> None:
    text = " one\ttwo\nthree\u00a0four\u2003 five, six\u3000"
    assert outcome({"length": {"min_words": 7}}, [raw("a", text)])["a"] == (
        "too_few_words",
        "6 words < min_words 7",
    )
    assert outcome({"length": {"min_words": 6}}, [raw("a", text)])["a"] is None


def test_unspaced_scripts_count_words_by_characters() -> None:
    """CJK runs count 1.5 characters a word, Thai-like ones 4 (at least one word each); full-width
    punctuation is no word; spaced scripts (Korean) keep whitespace words. Same count both ways."""
    texts = {
        "thanks": "谢谢",  # 1 word
        "i_dont_know": "我不知道",  # 4 characters: 2 words
        "great_wall": "请介绍一下长城的历史。",  # 10 characters: 6 words
        "japanese": "日本でおすすめの観光地を教えてください。",
        "mixed": "我会用Python写代码",  # Python + 7 characters: 5 words
        "thai": "แมวกินมันหมูได้หรือไม่",  # 22 code points: 5 words
        "korean": "식물은 사람을 기억하는가?",  # 3 spaced words
        "english": "two words",
    }
    got = outcome({"length": {"min_words": 3}}, [raw(k, v) for k, v in texts.items()])
    assert got == {
        "thanks": ("too_few_words", "1 words < min_words 3"),
        "i_dont_know": ("too_few_words", "2 words < min_words 3"),
        "great_wall": None, "japanese": None, "mixed": None, "thai": None, "korean": None,
        "english": ("too_few_words", "2 words < min_words 3"),
    }
    long = "长城始建于两千多年前，历代王朝不断修建。"  # 18 characters: 12 words
    assert outcome({"length": {"max_words": 10}}, [raw("a", long)])["a"] == (
        "too_many_words", "12 words > max_words 10"
    )
    assert outcome({"length": {"max_words": 12}}, [raw("a", long)])["a"] is None


def test_length_counts_the_whole_conversation() -> None:
    # "all" view: user and assistant turns together reach min_words 4.
    assert outcome({"length": {"min_words": 4}}, [sft("a", "two words", "two more")])["a"] is None


def test_role_bounds_apply_to_every_turn_of_the_role() -> None:
    config = {"length": {"roles": {"assistant": {"min_words": 5}, "user": {"max_words": 3}}}}
    got = outcome(
        config,
        [
            sft("short_second_answer", "hi", CLEAN, "ok", "far too short"),
            sft("long_answers", "hi", CLEAN, "more", CLEAN),
            sft("long_question", "what is this thing", CLEAN),
            raw("raw_has_no_roles", "tiny"),
        ],
    )
    assert got == {
        "short_second_answer": ("assistant_too_few_words", "assistant turn: 3 words < min_words 5"),
        "long_answers": None,
        "long_question": ("user_too_many_words", "user turn: 4 words > max_words 3"),
        "raw_has_no_roles": None,
    }


def test_role_bounds_cover_both_preference_answers() -> None:
    config = {"length": {"roles": {"assistant": {"min_words": 5}}}}
    got = outcome(
        config, [pref("short_rejected", "q", CLEAN, "no"), pref("fine", "q", CLEAN, CLEAN + " Yes.")]
    )
    assert got == {
        "short_rejected": ("assistant_too_few_words", "assistant turn: 1 words < min_words 5"),
        "fine": None,
    }


def test_token_bounds_use_the_bundled_tokenizer() -> None:
    from curation.llm.tokenizer import load_tokenizer
    from schemas.bundled import bundled_smollm2_gguf

    assert bundled_smollm2_gguf().is_file()
    tokenizer = load_tokenizer(None)  # loaded once per process; cached for the stages below
    assert load_tokenizer(None) is tokenizer
    n = len(tokenizer(CLEAN, add_special_tokens=False)["input_ids"])
    assert 10 < n < 30  # a real BPE: fewer tokens than chars, about one per word
    got = outcome(
        {"length": {"min_tokens": n + 1, "roles": {"assistant": {"max_tokens": n - 1}}}},
        [raw("short", CLEAN), raw("long", CLEAN + " And more."), sft("answer", CLEAN + " Why?", CLEAN)],
    )
    assert got == {
        "short": ("too_few_tokens", f"{n} tokens < min_tokens {n + 1}"),
        "long": None,
        "answer": ("assistant_too_many_tokens", f"assistant turn: {n} tokens > max_tokens {n - 1}"),
    }


def test_missing_bundled_model_names_the_setup_script(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas import bundled

    monkeypatch.setattr(bundled, "find_smollm2_gguf", lambda: None)
    with pytest.raises(ConfigError, match="scripts/setup.sh"):
        bundled.bundled_smollm2_gguf()


# --- placeholders ---------------------------------------------------------------------------

# alpaca-7b's answer to an alpaca_eval prompt (tatsu-lab/alpaca_eval@cd543a14,
# results/alpaca-7b_concise/model_outputs.json#557): the next record of its generation prompt follows.
LEAKED = (
    "Barcelona is an amazing city located on the northeast coast of Spain. It is truly a city that everyone"
    " should visit at least once in their life. \n##\n2. Instruction: Please provide an example of each.\n"
    "2. Input:\n<noinput>\n2. Output:\n\nAn example of a natural disaster is an earthquake."
)


def test_placeholder_answers_and_leaked_templates_are_removed_by_default(public_data: Path) -> None:
    sft_dir = public_data / "sft"
    code = json.loads((sft_dir / "gpteacher_codegen_instruct.json").read_text(encoding="utf-8"))
    picked = json.loads((sft_dir / "alpaca_eval_outputs_picked.json").read_text(encoding="utf-8"))
    selfinstruct = [json.loads(line) for line in (sft_dir / "selfinstruct_user_oriented_252.jsonl")
                    .read_text(encoding="utf-8").splitlines()]
    # Placeholder tokens as Alpaca data spells them in its `input` fields (alpaca_en_demo rows 184,
    # 514), used as answers to real Self-Instruct prompts.
    tokens = ["noinput", "No input", "<nooutput>", "N/A", "\u200b", ",_"]
    rows = [sft(f"token-{i}", selfinstruct[i]["instruction"], t) for i, t in enumerate(tokens)]
    rows.append(sft("leaked", "Describe Barcelona.", LEAKED))
    rows.append(pref("leaked_chosen", "Describe Barcelona.", LEAKED, "Nice city."))
    # Near misses: short real answers, worked examples with Input:/Output:, a recipe's "Instructions:".
    short = [(r["instruction"], r["instances"][0]["output"]) for r in selfinstruct
             if len(r["instances"][0]["output"]) < 12]
    rows += [sft(f"short-{i}", q, a) for i, (q, a) in enumerate(short)]
    # A programming problem with an `Input:`/`Output:` example (alpaca_eval); `# Output:` after code.
    rows += [sft("io_example", picked[3]["instruction"], picked[3]["output"]),
             sft("io_code", code[166]["instruction"], code[166]["response"]),
             sft("examples", "Explain two_sum.", "Example 1:\nInput: nums = [2,7], target = 9\nOutput: [0,1]\n"
                 "Example 2:\nInput: nums = [3,3], target = 6\nOutput: [0,1]"),
             sft("recipe", "Pancakes?", "Ingredients:\n- 2 eggs\n- flour\nInstructions:\n1. Mix.\nOutput: 8 pancakes"),
             raw("format_doc", "Each record has three fields:\nInstruction: the task\nInput: context\nOutput: the answer"),
             sft("ascii_art", "Draw a house in ASCII art.", "```\n   /\\\n  /  \\\n /____\\\n |    |\n |____|\n```")]
    got = outcome({}, rows)  # an empty filters section: the default checks
    removed = {k: v for k, v in got.items() if v is not None}
    assert {k: v[0] for k, v in removed.items()} == {
        **{f"token-{i}": "placeholder_answer" for i in range(len(tokens))},
        "leaked": "leaked_template", "leaked_chosen": "leaked_template",
    }
    assert len(short) > 15 and removed["token-0"] == ("placeholder_answer", "answer is only a placeholder: 'noinput'")
    assert removed["token-4"][1] == "answer is only a placeholder: '<invisible>'"
    assert removed["leaked"][1] == "1 Instruction: and 2 Input:/Output:/Response: fields at line starts"
    # Before the length rule (a placeholder is short too), and off with `placeholders: null`.
    assert outcome({"length": {"min_words": 3}}, rows[:1])["token-0"][0] == "placeholder_answer"
    assert outcome({"placeholders": None}, rows) == dict.fromkeys(got)
    only_templates = outcome({"placeholders": {"placeholder": False}}, rows)
    assert {k for k, v in only_templates.items() if v} == {"leaked", "leaked_chosen"}


# --- truncated ------------------------------------------------------------------------------

CUT = {  # answers cut off, each by one of the structures the check reads
    "open_fence": "Here is the code:\n\n```python\ndef add(a, b):\n    return a",
    "list_marker": "Three fruits:\n1. Apple\n2. Banana\n3.",
    "colon": "Sure. The steps are as follows:",
    "comma": "The causes of the war were economic rivalry, nationalism,",
    "bracket": "Use the mean (the sum of the values divided by",
    "quote": 'He looked at me and said "we will never',
    "function_word": "The capital of France is Paris, which lies on the",
    "mid_sentence": "Water boils at sea level. At higher altitudes the air pressure is lower so water boils at a lower temperat",
    "second_turn": "unused",
}
NEAR_MISSES = {  # complete answers that end without a period
    "closed_code": "Here:\n\n```python\nprint('hi')\n```",
    "list_items": "Fruits that are rich in vitamin C:\n- Oranges and lemons from Spain\n- Kiwis grown in New Zealand"
                  "\n- Strawberries picked in early summer",
    "number": "42",
    "word": "Paris",
    "table": "| planet | moons |\n|---|---|\n| Mars | 2 |",
    "title": "The Old Man and the Sea",
    "emoji": "Have a wonderful day, and enjoy every minute of the sunshine out there 🌞",
    "url": "The documentation lives on the project's site at https://docs.python.org/3/",
    "cjk": "北京是中国的首都。",
    "cjk_short": "长城",
    "poem": "The river bends beneath the hill\nAnd all the morning air is still\nThe swallows turn above the mill",
    "math": "The solution of the equation is\n\n$$x = \\frac{-b}{2a}$$",
    "formula": "Subtracting 3 from both sides and dividing by 2 gives the final answer x = 7",
    "json": '{"name": "Ada", "languages": ["en", "fr"]}',
    "letter": "Dear Sam,\n\nThank you for the lovely flowers.\n\nBest regards,",
    "casual": "i think it depends on what you want to do with it honestly",
    "attribution": '"Be yourself; everyone else is already taken." - Oscar Wilde',
}


def test_truncated_answers_are_removed_and_near_misses_kept(shared_data: Path) -> None:
    rows = [sft(f"cut-{k}", "Answer this.", v) for k, v in CUT.items() if k != "second_turn"]
    # Only the final answer counts: a cut earlier turn was answered after.
    rows.append(sft("cut-second_turn", "Hi", "Hello, I was saying that the", "Go on.", "Sorry, it was cut off"))
    rows += [sft(f"keep-{k}", "Answer this.", v) for k, v in NEAR_MISSES.items()]
    rows += [pref("pref", "Q?", CUT["comma"], "No."), raw("doc", CUT["comma"])]  # sft answers only
    got = outcome({"truncated": {}}, rows)
    assert {k for k, v in got.items() if v} == {f"cut-{k}" for k in CUT if k != "second_turn"}
    assert {v[0] for v in got.values() if v} == {"truncated_answer"}
    assert got["cut-open_fence"][1] == "an unclosed code block at the end"
    assert got["cut-list_marker"][1] == "a list cut after its marker '3.'"
    assert got["cut-function_word"][1].startswith("ends on 'the': ")
    assert outcome({}, rows) == dict.fromkeys(got)  # off by default
    # Real answers: whole Alpaca-GPT4 answers that end a sentence are kept; the same cut after
    # two thirds of their words (not at a sentence end) are removed in most cases. (Cut inside the
    # first sentence, an answer cannot be told from a writer who ends sentences without a period.)
    alpaca = json.loads((shared_data / "sft" / "llamafactory_alpaca_en_demo.json").read_text(encoding="utf-8"))
    whole = [r for r in alpaca[:120] if len(r["output"].split()) > 40 and r["output"].rstrip().endswith(".")]
    cut = [" ".join(r["output"].split()[: len(r["output"].split()) * 2 // 3]) for r in whole]
    cut = [c for c in cut if not c.endswith((".", "!", "?"))]
    real = outcome({"truncated": {}}, [sft(f"whole-{i}", r["instruction"], r["output"]) for i, r in enumerate(whole)]
                   + [sft(f"real-cut-{i}", "Answer this.", c) for i, c in enumerate(cut)])
    assert len(whole) > 40 and not any(v for k, v in real.items() if k.startswith("whole"))
    assert sum(v is not None for k, v in real.items() if k.startswith("real-cut")) > 0.5 * len(cut)


# --- keywords -------------------------------------------------------------------------------


def test_keywords_match_whole_words_case_folded() -> None:
    got = outcome(
        {"keywords": {"exclude": ["cat", "  Dog   Food "]}},
        [
            raw("word", "I have a cat."),
            raw("upper", "THE CAT SAT"),
            raw("inside_a_word", "a category of concatenation"),
            raw("spaced", "some dog\n  food here"),
            raw("clean", CLEAN),
        ],
    )
    assert got == {
        "word": ("excluded_keyword", "cat"),
        "upper": ("excluded_keyword", "cat"),
        "inside_a_word": None,
        "spaced": ("excluded_keyword", "dog food"),
        "clean": None,
    }


def test_phrase_boundaries_only_at_word_characters() -> None:
    matcher = PhraseMatcher(["c++", "i'm sorry, but", "!important", "sorry"])
    texts = pl.Series(["we use c++ daily", "abc++ no", "i'm sorry,   but no", "x !important;", "x!important", "sorryx"])
    assert matcher.first(texts).to_list() == ["c++", None, "i'm sorry, but", "!important", "!important", None]
    assert PhraseMatcher(["", "   "]).phrases == []


def test_curly_apostrophes_match_straight_ones() -> None:
    got = outcome(
        {"keywords": {"exclude": ["I’m sorry, but"]}},
        [raw("a", "Well, I'm sorry,  but no."), raw("b", "I’m sorry but")],
    )
    assert got == {"a": ("excluded_keyword", "i'm sorry, but"), "b": None}


def test_exclude_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    phrases = tmp_path / "phrases.txt"
    phrases.write_text(
        "# a comment naming spam\n\n  Lorem Ipsum  \n#another\nclick here\n", encoding="utf-8"
    )
    assert read_phrases(phrases) == ["Lorem Ipsum", "click here"]
    got = outcome(
        {"keywords": {"exclude_file": str(phrases)}},
        [
            raw("lorem", "lorem ipsum dolor"),
            raw("click", "Click HERE now"),
            raw("comment", "spam and another"),
        ],
    )
    assert got == {
        "lorem": ("excluded_keyword", "lorem ipsum"),
        "click": ("excluded_keyword", "click here"),
        "comment": None,
    }


def test_a_hundred_thousand_phrases(tmp_path: Path) -> None:
    # One regex of them all exceeded the regex size limit (polars raised); an automaton does not.
    phrases = tmp_path / "phrases.txt"
    made_up = (f"zq{n:05d} blocked" for n in range(100_000))
    phrases.write_text("\n".join([*made_up, "click here"]) + "\n", encoding="utf-8")
    got = outcome(
        {"keywords": {"exclude_file": str(phrases)}},
        [raw("hit", "Please click  here."), raw("made_up", "zq00042 BLOCKED now"), raw("clean", "zq00042blocked")],
    )
    assert got == {"hit": ("excluded_keyword", "click here"), "made_up": ("excluded_keyword", "zq00042 blocked"),
                   "clean": None}


def test_refusals_are_opt_in() -> None:
    rows = [
        sft("refusal", "Tell me a secret.", "As an AI language model, I can’t do that."),
        sft("clean", "Hi?", CLEAN),
    ]
    assert outcome({"keywords": {"exclude": ["unrelated"]}}, rows) == {"refusal": None, "clean": None}
    got = outcome({"keywords": {"refusals": True}}, rows)
    assert got == {"refusal": ("excluded_keyword", "as an ai language model"), "clean": None}


def test_refusals_are_what_answers_say_not_brand_names(public_data: Path) -> None:
    # Real model answers to alpaca_eval prompts (tests/fixtures/README.md).
    picked = json.loads((public_data / "sft" / "alpaca_eval_outputs_picked.json").read_text(encoding="utf-8"))
    real = {i: sft(f"real-{i}", picked[i]["instruction"], picked[i]["output"]) for i in (0, 1, 2)}
    rows = [
        real[0],  # "I'm sorry, I cannot write a detailed patent for you ..."
        real[1],  # "As an AI, I don't necessarily experience inspiration ..."
        sft("opinion", "Is pirating games wrong?", "As an AI, I can't have personal opinions, but piracy is illegal."),
        sft("declines", "Write malware.", "I'm sorry, but I can't help with that request."),
        # Near misses: answers naming AI products, a prompt about ChatGPT, a story, a letter.
        real[2],  # "I'm sorry for the delay in processing your order ..." (an apology the user asked for)
        sft("product", "How can I draft emails faster?", "Try ChatGPT or OpenAI's GPT-4 API to draft them."),
        sft("prompt", "As an AI language model, what would ChatGPT say about tea?", CLEAN),
        sft("story", "Write a story.", "I cannot help but feel that the river knows my name, she said."),
        sft("researcher", "Introduce yourself.", "As an AI researcher, I study how models learn."),
    ]
    got = outcome({"keywords": {"refusals": True}}, rows)
    assert got == {
        "real-0": ("excluded_keyword", "i'm sorry, i cannot"),
        "real-1": ("excluded_keyword", "as an ai,"),
        "opinion": ("excluded_keyword", "as an ai,"),
        "declines": ("excluded_keyword", "i'm sorry, but i can't"),
        "real-2": None, "product": None, "prompt": None, "story": None, "researcher": None,
    }
    # refusals_view: all also reads the prompts (the old behaviour); `view` stays for `exclude`.
    everywhere = outcome({"keywords": {"refusals": True, "refusals_view": "all"}}, rows)
    assert everywhere["prompt"] == ("excluded_keyword", "as an ai language model")
    both = outcome({"keywords": {"refusals": True, "exclude": ["tea"], "view": "user"}}, rows)
    assert both["prompt"] == ("excluded_keyword", "tea") and both["declines"] == got["declines"]


def test_bundled_refusal_list_is_usable() -> None:
    phrases = read_phrases(REFUSAL_PHRASES)
    assert len(phrases) >= 40 and len(set(phrases)) == len(phrases)
    assert all(p == p.lower().strip() for p in phrases)
    assert PhraseMatcher(phrases).first(pl.Series(phrases)).to_list() == phrases


def test_keyword_view_selects_the_turns() -> None:
    rows = [sft("a", "Say openai.", "I will not.")]
    assert outcome({"keywords": {"exclude": ["openai"], "view": "assistant"}}, rows)["a"] is None
    assert outcome({"keywords": {"exclude": ["openai"], "view": "user"}}, rows)["a"] == (
        "excluded_keyword",
        "openai",
    )


# --- format ---------------------------------------------------------------------------------


def test_invalid_json_answers() -> None:
    got = outcome(
        {"format": {"json": True}},
        [
            sft("bad_object", "Give JSON.", '  {"a": 1,}'),
            sft("good_object", "Give JSON.", '{"a": [1, 2]}'),
            sft("bad_block", "Give JSON.", 'Here:\n```json\n{"a": }\n```\nDone.'),
            sft("good_block", "Give JSON.", 'Here:\n```JSON\n{"a": 2}\n```'),
            sft("json_in_question_only", '{"not": json', "Plain answer."),
            raw("raw_list", "[1, 2,"),
            pref("bad_chosen", "A JSON list?", "[oops", "fine"),
            pref("bad_rejected_only", "A JSON list?", "fine", "[oops"),
            sft("absurdly_nested", "Give JSON.", "[" * 100_000),
        ],
    )
    assert got["bad_object"] == (
        "invalid_json",
        "Expecting property name enclosed in double quotes at line 1 column 9",
    )
    assert got["bad_block"] is not None and got["bad_block"][0] == "invalid_json"
    assert got["bad_chosen"] is not None and got["bad_chosen"][0] == "invalid_json"
    assert got["absurdly_nested"] == ("invalid_json", "nested too deeply")
    assert [k for k, v in got.items() if v is None] == [
        "good_object",
        "good_block",
        "json_in_question_only",
        "raw_list",  # raw documents are not answers: "[1]" citations are not JSON
        "bad_rejected_only",
    ]


def test_json_is_checked_where_asked_for_or_claimed() -> None:
    system_asks = Record(
        id="asked_in_system",
        source="test:asked_in_system",
        kind="sft",
        messages=[
            {"role": "system", "content": "Reply in json."},
            {"role": "user", "content": "Bob, 22"},
            {"role": "assistant", "content": "{name: 'Bob', age: 22}"},
        ],
    ).to_row()
    got = outcome(
        {"format": {"json": True}},
        [
            # Asked for (a prompt turn names JSON): any answer opening with [ or { must load.
            sft("asked_python_dict", "Return the user as a JSON object.", "{'name': 'Bob'}"),
            system_asks,
            # Claimed by the answer's shape: an object with a quoted key (a tool call cut
            # off), or nothing but JSON's tokens (a trailing comma).
            sft("tool_call_cut", "Weather in Paris?", '{"name": "get_weather", "arguments": {"city": "Par'),
            sft("tool_call_python", "Weather in Paris?", '{"name": "get_weather", "arguments": None}'),
            sft("json_tokens_only", "Sort 3, 1, 2.", "[1, 2, 3,]"),
            sft("json_fence", "Show the config.", "[Config]\n```json\n{'a': 1}\n```"),
            # Neither: answers that open with a bracket for other reasons are not JSON.
            sft("lyrics", "Write a song about rain.", "[Verse 1]\nRain on the window\n[Chorus]\nRain"),
            sft("template", "Write a cover letter.", "[Your Name]\n[Address]\n\nDear Hiring Manager,"),
            sft("python_list", "Split 'Coding is Fun!' into words.", "['Coding', 'is', 'Fun!']"),
            sft("js_object", "Write a JavaScript object for Bob.", "{name: 'Bob', age: 22}"),
            sft("list_then_prose", "Which sum to 26?", "[10, 15, 20] are the elements that sum to 26."),
            sft("placeholder_braces", "Write an article.", "{start article}\n\nBacklinks matter."),
            sft("jsonl_is_not_json", "Write a JSONL line for Bob.", "{name: 'Bob'}"),
            sft("valid_unasked", "Sort 3, 1, 2.", "[1, 2, 3]"),
        ],
    )
    removed = {k: v[0] for k, v in got.items() if v is not None}
    assert removed == dict.fromkeys(
        ["asked_python_dict", "asked_in_system", "tool_call_cut", "tool_call_python", "json_tokens_only", "json_fence"],
        "invalid_json",
    )


def test_json_check_on_real_answers(public_data: Path) -> None:
    """Letter templates (`[Your name]`), a script opening with `[Intro Music]`, valid tool calls and
    code answers to prompts that name JSON are not invalid JSON; glaive's answer to "Convert the
    given XML code to JSON" that misses its closing brace (its record 78, shipped alone) is."""
    from curation.ingest import ingest
    from schemas.config import InputSpec

    names = ("selfinstruct_user_oriented_252.jsonl", "oasst_en_100_tree.jsonl", "gpteacher_codegen_instruct.json",
             "llamafactory_glaive_toolcall_en_demo.json", "llamafactory_glaive_toolcall_en_demo_78.json")
    records = ingest([InputSpec(path=str(public_data / "sft" / name)) for name in names], progress=False).records
    rejected = build_filter_stage(Filters.model_validate({"format": {"json": True}}))(records).rejected
    assert rejected["reason"].to_list() == ["invalid_json"]
    assert rejected["source"][0].endswith("llamafactory_glaive_toolcall_en_demo_78.json#0")


def test_json_check_off_by_default() -> None:
    assert outcome({"format": {"code": True}}, [sft("a", "q", "{broken")])["a"] is None


def test_unbalanced_code_fences() -> None:
    got = outcome(
        {"format": {"code": True}},
        [
            sft("open", "Code?", "Sure:\n```python\nx = 1\n"),
            sft("closed", "Code?", "Sure:\n```python\nx = 1\n```\nand\n```\nplain\n```"),
            sft("inline_backticks", "Code?", "Use ``` to open a block."),
        ],
    )
    assert got == {
        "open": ("unbalanced_code_fence", "1 ``` fence lines (odd)"),
        "closed": None,
        "inline_backticks": None,
    }


def test_unparsable_python_blocks() -> None:
    got = outcome(
        {"format": {"code": True}},
        [
            sft("broken", "Code?", "Try:\n```python\nx = 1\ndef f(:\n    pass\n```"),
            sft("broken_py", "Code?", "```py\nprint('a'\n```"),
            sft("indented", "Code?", "1. Step:\n   ```python\n   if x:\n       y = 1\n   ```"),
            sft("not_python", "Code?", "```js\nfunction (\n```"),
            sft("escape_warning", "Code?", '```python\nre.compile("\\d+")\n```'),
            sft("absurdly_nested", "Code?", "```python\n" + "-" * 100_000 + "1\n```"),
            # A raw document quoting a fragment or a doc-build include is not a bad document; its
            # fences are still checked (unbalanced_code_fence).
            raw("doc_fragment", "Install it, then:\n```python\n{!../../docs_src/app.py!}\n```"),
            raw("doc_cut", "Then:\n```python\nif x:\n"),
        ],
    )
    assert got["doc_cut"] == ("unbalanced_code_fence", "1 ``` fence lines (odd)")
    del got["doc_cut"]
    assert got["broken"] is not None and got["broken"][0] == "unparsable_code"
    assert "line 2" in got["broken"][1]
    assert got["broken_py"] is not None and got["broken_py"][0] == "unparsable_code"
    assert got["absurdly_nested"] is not None and got["absurdly_nested"][0] == "unparsable_code"
    assert [k for k, v in got.items() if v is None] == ["indented", "not_python", "escape_warning", "doc_fragment"]


# --- repetition -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paragraph(public_data: Path) -> str:
    """A real web paragraph of 40+ words."""
    for line in (public_data / "raw" / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines():
        for para in json.loads(line)["text"].split("\n"):
            if len(para.split()) >= 40:
                return para
    pytest.fail("no long paragraph in c4_demo.jsonl")


def test_repeated_lines_on_a_real_paragraph(paragraph: str) -> None:
    rows = [raw("repeated", "\n".join([paragraph] * 3)), raw("once", paragraph)]
    got = outcome({"repetition": {}}, rows)
    assert got == {
        "repeated": (
            "repeated_lines",
            "66.6% of chars in a line, sentence or block repeated 3+ times running, over max_dup_line_frac 0.3 (30%)",
        ),
        "once": None,
    }
    gopher = outcome({"repetition": {"structure_aware": False}}, rows)
    assert gopher["repeated"] == (
        "repeated_lines",
        "66.6% of lines repeat an earlier line, over max_dup_line_frac 0.3 (30%)",
    )
    both_off = {"repetition": {"max_dup_line_frac": None, "max_top_ngram_frac": None}}
    assert outcome(both_off, rows)["repeated"] is None


def test_repeated_ngrams_on_a_real_paragraph(paragraph: str) -> None:
    words = paragraph.split()
    spam = " ".join(words[:2])
    text = " ".join([spam] * 10 + words[2:30])
    top = 10 * len("".join(words[:2]))  # the top 2-gram occurs 10 times
    frac = top / len("".join(text.split()))
    config = {"max_dup_line_frac": None, "min_words": {"raw": 0}}  # 48 words: under Gopher's 50
    got = outcome({"repetition": config}, [raw("spam", text), raw("once", paragraph)])
    assert got["once"] is None
    assert got["spam"] == (
        "repeated_ngrams",
        f"{int(frac * 1000) / 10}% of word chars in the top 2-gram, over max_top_ngram_frac 0.2 (20%)",
    )
    assert frac > 0.2
    assert outcome({"repetition": {"max_dup_line_frac": None}}, [raw("spam", text)])["spam"] is None


def test_repeated_ngrams_need_two_occurrences() -> None:
    # One 3-gram covers the whole text, but it occurs once: no repetition.
    config = {"repetition": {"ngram": 3, "max_top_ngram_frac": 0.1}}
    assert outcome(config, [raw("a", "alpha beta gamma")])["a"] is None


def test_repetition_looks_at_answers_by_default(paragraph: str) -> None:
    # A rewrite task quotes the user's text; only a repetitive answer is a problem.
    lines = paragraph.split(". ")[:3]
    echo = sft("echo", "Rewrite these lines:\n" + "\n".join(lines), "\n".join(lines))
    spam = sft("spam", "Say something.", "\n".join([lines[0]] * 3))
    every_length = {"min_words": {"sft": 0}}
    assert outcome({"repetition": every_length}, [echo, spam]) == {
        "echo": None,
        "spam": (
            "repeated_lines",
            "66.6% of chars in a line, sentence or block repeated 3+ times running, over max_dup_line_frac 0.3 (30%)",
        ),
    }
    # With the prompt in view, its lines and their echo are counted together (Gopher's count).
    gopher_all = {**every_length, "view": "all", "structure_aware": False}
    assert outcome({"repetition": gopher_all}, [echo])["echo"][0] == "repeated_lines"


@pytest.fixture(scope="module")
def stanzas(public_data: Path) -> list[str]:
    """The five stanzas of Blake's "Introduction" (Songs of Innocence), four lines each."""
    text = (public_data / "raw" / "gutenberg" / "blake-poems.txt").read_text(encoding="utf-8")
    poem = text[text.index("Piping down the valleys wild") : text.index("THE SHEPHERD")]
    found = [s.strip() for s in poem.split("\n \n") if s.strip()]
    assert len(found) == 5 and all(len(s.splitlines()) == 4 for s in found)
    return found


def test_a_chorus_between_verses_is_not_a_loop(stanzas: list[str]) -> None:
    """A song: four verses, the chorus after each and sung twice at the end (20 of its 36 lines
    repeat an earlier one, Gopher's count) is kept; a model looping on its last line is removed."""
    *verses, chorus = stanzas
    song = "\n\n".join(part for verse in verses for part in (verse, chorus)) + "\n\n" + chorus
    loop = "\n\n".join(verses) + "\n" + "\n".join([chorus.splitlines()[-1].strip()] * 12)
    got = outcome({"repetition": {}}, [raw("song", song), raw("loop", loop)])
    assert got["song"] is None
    assert got["loop"] is not None and got["loop"][0] == "repeated_lines"
    gopher = outcome({"repetition": {"structure_aware": False}}, [raw("song", song)])
    assert gopher["song"] == ("repeated_lines", "44.4% of lines repeat an earlier line, over max_dup_line_frac 0.3 (30%)")


def test_loops_of_sentences_and_numbered_blocks(paragraph: str) -> None:
    """A sentence repeated within one line and a numbered two-line item repeated as new items
    are loops Gopher's line count misses; the same item twice running (a chorus sung twice) is not."""
    sentences = paragraph.split(". ")
    in_line = paragraph + " " + " ".join([sentences[1] + "."] * 6)
    item = f"{sentences[0]}.\n   {sentences[1]}."
    numbered = "\n".join(f"{n}. {item}" for n in range(1, 5))
    twice = paragraph + "\n" + "\n".join(f"{n}. {item}" for n in range(1, 3)) + "\n" + sentences[2]
    rows = [raw("in_line", in_line), raw("numbered", numbered), raw("twice", twice)]
    got = outcome({"repetition": {"max_top_ngram_frac": None}}, rows)
    assert {k: v and v[0] for k, v in got.items()} == {"in_line": "repeated_lines", "numbered": "repeated_lines", "twice": None}
    gopher = outcome({"repetition": {"structure_aware": False, "max_top_ngram_frac": None}}, rows)
    assert gopher["in_line"] is None  # one line: nothing for a line count to see


def test_table_cells_do_not_count_as_repeated_ngrams(public_data: Path) -> None:
    """A Markdown table of real PEP headers repeats its Status and Type cells in every row."""
    rows = ["| PEP | Title | Status | Type |", "|---|---|---|---|"]
    # The headers of the first 38 Final Standards Track PEPs (tests/fixtures/README.md).
    for path in sorted((public_data / "raw" / "pep_headers").glob("pep-*.rst")):
        head = dict(
            line.split(": ", 1) for line in path.read_text(encoding="utf-8").splitlines()[:12] if ": " in line
        )
        if head.get("Type") == "Standards Track" and head.get("Status") == "Final":
            rows.append(f"| {head['PEP']} | {head['Title']} | Final | Standards Track |")
    table = "Final Standards Track PEPs:\n\n" + "\n".join(rows[:40])
    assert outcome({"repetition": {}}, [raw("table", table)])["table"] is None
    gopher = outcome({"repetition": {"structure_aware": False}}, [raw("table", table)])["table"]
    assert gopher is not None and gopher[0] == "repeated_ngrams"
    # A real loop inside a table still counts: the same row 20 times running.
    looped = table + "\n" + "\n".join([rows[-1]] * 20)
    assert outcome({"repetition": {}}, [raw("looped", looped)])["looped"][0] == "repeated_lines"


def test_default_repetition_rules_keep_instruction_data(public_data: Path) -> None:
    """GSM8K calculator annotations and glaive tool calls repeat by design: Gopher's rules are
    for documents, so short texts are not checked and the markup is set aside."""
    from curation.ingest import ingest
    from schemas.config import InputSpec

    def removed(name: str) -> pl.DataFrame:
        records = ingest([InputSpec(path=str(public_data / name))], progress=False).records
        return build_filter_stage(Filters.model_validate({"repetition": {}}))(records).rejected

    gsm8k = removed("sft/gsm8k_test.jsonl")  # its first 200 of 1319 (was 35 of 1319)
    assert gsm8k["reason"].to_list() == ["repeated_ngrams"]  # one 121-word answer, its top 2-gram 21%
    assert gsm8k["detail"][0] == "21.3% of word chars in the top 2-gram, over max_top_ngram_frac 0.2 (20%)"
    tools = removed("sft/llamafactory_glaive_toolcall_en_demo.json")  # its first 20 of 300 (was 26 of 300)
    # A second answer (#17; #152 too in the whole file) repeats the first answer's code once (the
    # turns are joined): Gopher's line count removed it; a text said twice is not a loop.
    assert tools.height == 0


# --- the stage as a whole -------------------------------------------------------------------

FULL = {
    "length": {"min_words": 3},
    "keywords": {"exclude": ["forbidden"]},
    "format": {"json": True, "code": True},
    "repetition": {},
}


def test_first_failing_check_in_config_order_wins() -> None:
    rows = [
        sft("length_first", "JSON?", "{forbidden"),  # too short, keyword, bad JSON
        sft("keyword_next", "JSON?", "{ forbidden words here"),  # keyword, bad JSON
        sft("json_next", "JSON?", "{ all words here"),  # bad JSON, nothing else
    ]
    got = outcome(FULL, rows)
    assert {k: v[0] if v else None for k, v in got.items()} == {
        "length_first": "too_few_words",
        "keyword_next": "excluded_keyword",
        "json_next": "invalid_json",
    }


def test_kept_rows_keep_order_schema_and_stats() -> None:
    rows = [
        raw("r0", CLEAN),
        raw("r1", "short"),
        sft("r2", "Question here please?", CLEAN),
        raw("r3", "it is forbidden here"),
        pref("r4", "Which is better?", CLEAN, "Not this one at all."),
        raw("r5", "tiny"),
        sft("r6", "Code please now?", "```python\nx = (\n```"),
        raw("r7", CLEAN + " Again."),
    ]
    result = run(FULL, rows)
    assert result.kept["id"].to_list() == ["r0", "r2", "r4", "r7"]
    assert result.kept.equals(records_frame(rows).filter(pl.col("id").is_in(["r0", "r2", "r4", "r7"])))
    assert result.rejected["id"].to_list() == ["r1", "r3", "r5", "r6"]
    assert set(result.rejected["stage"]) == {"filters"}
    assert result.rejected["text"].to_list() == ["short", "it is forbidden here", "tiny", None]
    stats = result.stats("filters", len(rows))
    assert stats.removed_by_reason == {
        "too_few_words": 2,
        "excluded_keyword": 1,
        "unparsable_code": 1,
    }
    assert (stats.rows_in, stats.out, stats.removed) == (8, 4, 4)


def test_empty_input() -> None:
    result = run(FULL, [])
    assert result.kept.height == 0 and result.rejected.height == 0


def test_real_data_keeps_most_records(public_data: Path) -> None:
    c4 = (public_data / "raw" / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()
    code = json.loads((public_data / "sft" / "gpteacher_codegen_instruct.json").read_text(encoding="utf-8"))
    selfinstruct = [json.loads(line) for line in (public_data / "sft" / "selfinstruct_user_oriented_252.jsonl")
                    .read_text(encoding="utf-8").splitlines()]
    gsm8k = [json.loads(line) for line in (public_data / "sft" / "gsm8k_test.jsonl").read_text().splitlines()]
    rows = [raw(f"c4-{i}", json.loads(line)["text"]) for i, line in enumerate(c4)]
    pairs = [(r["instruction"], r["input"], r["response"]) for r in code]
    pairs += [(r["instruction"], r["instances"][0]["input"], r["instances"][0]["output"]) for r in selfinstruct]
    pairs += [(r["question"], "", r["answer"]) for r in gsm8k]
    rows += [sft(f"sft-{i}", (q + "\n" + context).strip(), a) for i, (q, context, a) in enumerate(pairs) if a.strip()]
    config = {
        "length": {"min_words": 3, "max_words": 4000, "roles": {"assistant": {"min_words": 1}}},
        "keywords": {"refusals": True},
        "format": {"json": True, "code": True},
        "repetition": {},
    }
    result = run(config, rows)
    reasons = result.stats("filters", len(rows)).removed_by_reason
    assert result.kept.height > 0.9 * len(rows), reasons
    assert set(reasons) <= {
        "too_few_words",
        "too_many_words",
        "excluded_keyword",
        "invalid_json",
        "unbalanced_code_fence",
        "unparsable_code",
        "repeated_lines",
        "repeated_ngrams",
    }
    assert result.rejected["detail"].null_count() == 0


def test_large_inputs_are_labelled_in_parallel_slices_with_the_same_outcome() -> None:
    # Above PARALLEL_MIN_ROWS the stage labels slices on threads: results must not change.
    from curation.filters import PARALLEL_MIN_ROWS

    kinds = [
        (lambda i: raw(f"short{i}", "too short"), ("too_few_words", "2 words < min_words 3")),
        (lambda i: sft(f"kw{i}", "Tell me.", f"{CLEAN} forbidden {i}"), ("excluded_keyword", "forbidden")),
        (lambda i: raw(f"ok{i}", f"{CLEAN} {i}"), None),
    ]
    rows, expected = [], {}
    for i in range(PARALLEL_MIN_ROWS):  # 3x the threshold: several slices
        for make, want in kinds:
            rows.append(make(i))
            expected[rows[-1]["id"]] = want
    result = run(FULL, rows)
    assert outcome(FULL, rows) == expected
    assert result.kept["id"].to_list() == [r["id"] for r in rows if expected[r["id"]] is None]
