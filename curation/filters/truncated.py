"""The truncation check: an sft record whose final answer was cut off (a generation that ran into
its token limit, a scrape cut at a size), judged by how the answer ends.

An answer is cut when it ends inside a structure it opened: an unclosed ``` / ~~~ code block, a
list marker with no item after it, a character that always continues (a comma, a colon, an
opening bracket or quote, a dash), a bracket or double quote opened on the last line and never
closed, or an English word that cannot end a sentence ("the", "of", "and"). A last line ending on
a letter without closing punctuation is cut only when it is prose: at least `min_words` words, or
sentences before it on the same line; and not when the answer's other lines also end open (lists
without periods, verse, unfenced code: that is the answer's style). Answers ending on anything
else are complete: closing punctuation, a closed code block, a table row, an emoji or other symbol,
a number or formula, a URL; and short last lines: a name, a title, a list item, a line of verse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from curation.filters.checks import CONTENT, ROW, Check, with_words, word_count
from schemas.config import TruncationFilter

if TYPE_CHECKING:
    from curation.filters.stage import Section, Work

REASON = "truncated_answer"
_LAST = "_last"  # the answer's last non-blank line, stripped
_WORDS = "_last_words"
_INDENTED = "_last_indented"  # the last line is indented under others: code (or a nested list item)
TAIL = 40  # characters of the answer's end shown in the detail

FENCES = (r"(?m)^[ \t]*```", r"(?m)^[ \t]*~~~")
LIST_MARKER = r"^(?:[-*+•]|\d{1,3}[.)]|[A-Za-z][.)])$"
# Characters after which text always goes on: a comma, a colon, an opening bracket or quote,
# an operator, a dash after a word ("well-", "and -"; a lone "-" is a list marker, "---" a rule).
OPENING = r"(?:[,:(\[{“‘«„=&–—，、：（「『【《〈]|[\p{L}\p{N}\s]-)$"
# ... except a letter's closing on a line of its own ("Best regards,", "Looking forward to it,").
VALEDICTION = r"^(?:\S+\s+){0,4}\S+,$"
# A bracket opened on the last line: more openings than closings (":(" is a face, not one).
_BRACKETS = (("(", ")"), ("[", "]"), ("{", "}"))
ENDS_ON_LETTER = r"\p{L}\p{M}*$"  # "☀️" ends on a mark too, after a symbol
# A last token with a digit, =, \, ^, _, /, @ or # is a number, formula, identifier, path, URL,
# address or hashtag: such tokens end answers ("The answer is 42", "x = 2y", "see https://...").
TOKEN_NOT_WORD = r"[\d=\\^_/@#]"
# A quotation and its attribution after a dash: '"..." - C.S. Lewis'.
ATTRIBUTION = r"[\"”]\s*[-–—―~]\s*(?:[^\s\"”]+\s*){1,6}$|^[–—―~]"
# A line of code (an assignment, a call, a comment after code): "return a" and "# Output : English" end on words.
CODE_LINE = r"[={};<>]|\w\(|//|\s#\s"
LIST_ITEM = r"^(?:[-*+•]|\d{1,3}[.)]|[A-Za-z][.)])\s"
# Words that cannot end a sentence: articles, possessives, conjunctions, prepositions that never
# stand last. Words that can, in any of these languages, are left out: English "to", "in", "no",
# "do"; German separable prefixes ("zu", "auf", "mit", "an"), pronouns and adverbs ("das", "du", "da", "ein(e)"),
# "die" (English); Spanish/Portuguese numerals ("una", "um", "dos"); Dutch "het", "voor"; one-letter
# conjunctions ("y", "e", "o": variable names too).
FUNCTION_WORDS = (
    # English
    "the", "a", "an", "and", "or", "nor", "but", "of", "with", "from", "into", "than", "their", "your", "my",
    "our", "its", "whose", "because", "although", "such", "these", "those", "very", "is", "are", "was", "were",
    # Spanish, Portuguese, French, Italian, German, Dutch
    "de", "del", "al", "la", "el", "los", "las", "un", "en", "con", "por", "para", "que", "su",
    "sus", "os", "as", "na", "em", "com", "et", "le", "les", "des", "au", "aux", "pour",
    "dans", "sur", "ou", "mais", "di", "il", "lo", "gli", "della", "che", "per", "und", "oder", "aber", "der",
    "dem", "den", "des", "von", "für", "im", "van", "een",
)
# A sentence end followed by another sentence on the same line: "... fast. Then the".
INNER_SENTENCE = r"\p{Ll}{2}[.!?][\"'”’)]?\s+[\p{Lu}\d]|[。！？][^\s。！？」』”’）]"
LIST_SEPARATOR = r"[,;|，、；]"
SENTENCE_END = r"\p{L}{2}[.!?][\"'”’)]*(?:\s|$)|[。！？]"
# Lines that count towards an answer's style (how its lines end): 3+ words, no table row or
# heading, outside code blocks.
_CODE_BLOCK = r"(?ms)^[ \t]*(?:```|~~~).*?^[ \t]*(?:```|~~~)[^\n]*$"
_STYLE_LINE = r"^[ \t]*[^\s|#]\S*(?:\s+\S+){2}|^[ \t]*[^\s|#].*[\p{Han}\p{Hiragana}\p{Katakana}]{5}"
_OPEN_LINE = r"[\p{L}\p{M}\p{N}]\s*$"


def truncation_section(cfg: TruncationFilter) -> Section:
    def section(work: Work) -> list[Check]:
        final = _final_answers(work)
        answer = pl.col(CONTENT).str.strip_chars_end()
        last = pl.col(_LAST)
        tail = pl.format("'{}'", answer.str.slice(-TAIL))
        fences = [answer.str.count_matches(fence) for fence in FENCES]
        multiline = answer.str.contains("\n")
        brackets = pl.any_horizontal(
            last.str.count_matches(rf"\{o}") - last.str.count_matches(rf"[:;]-?\{o}") > last.str.count_matches(rf"\{c}")
            for o, c in _BRACKETS
        )
        quotes = (last.str.count_matches("“") > last.str.count_matches("”")) | (last.str.count_matches('"') % 2 == 1)
        on_letter = last.str.contains(ENDS_ON_LETTER)
        token = last.str.extract(r"(\S+)$")
        word = on_letter & ~token.str.contains(TOKEN_NOT_WORD)
        words = last.str.count_matches(r"\S+")
        code = last.str.contains(CODE_LINE) | pl.col(_INDENTED)
        # On a line of 3+ words: "5. A" is an answer key's option.
        function_word = token.str.to_lowercase().is_in(FUNCTION_WORDS) & (words >= 3) & ~code
        # Not prose: a heading, a table row, an inline list ("Lucifer, NCIS", short items between
        # separators), a title or list of names (most words capitalised), a quotation's attribution.
        listing = last.str.count_matches(LIST_SEPARATOR) >= 2
        short_items = words <= 4 * (last.str.count_matches(LIST_SEPARATOR) + 1)
        titled = last.str.count_matches(r"(?:^|\s)[\p{Lu}\d]") * 5 >= words * 3
        shaped = last.str.contains(r"^(?:#|\|)") | (listing & short_items) | titled | last.str.contains(ATTRIBUTION) | code
        # A list item is a fragment by nature: prose only where it holds a sentence and goes on.
        long_line = (pl.col(_WORDS) >= cfg.min_words) & ~last.str.contains(LIST_ITEM)
        prose = (long_line | last.str.contains(INNER_SENTENCE)) & ~shaped
        # A writer who ends no sentence with punctuation ("i can do that") did not lose it at the end.
        punctuates = answer.str.contains(SENTENCE_END)
        detail = (
            pl.when(pl.any_horizontal(n % 2 == 1 for n in fences)).then(pl.lit("an unclosed code block at the end"))
            .when(multiline & last.str.contains(LIST_MARKER)).then(pl.format("a list cut after its marker '{}'", last))
            .when(last.str.contains(OPENING) & ~(multiline & last.str.contains(VALEDICTION)))
            .then(pl.format("ends on '{}': {}", last.str.slice(-1), tail))
            .when(brackets & ~last.str.contains(r"[.!?。！？]$")).then(pl.format("a bracket left open: {}", tail))
            .when(quotes & last.str.contains(r"[\p{L}\p{N},]$")).then(pl.format("a quote left open: {}", tail))
            .when(word & function_word).then(pl.format("ends on '{}': {}", token, tail))
            .when(word & prose & punctuates & ~_open_style()).then(
                pl.format("ends mid-sentence, without closing punctuation: {}", tail))
        )
        found = final.with_columns(detail.alias(f"_{REASON}")).select(ROW, f"_{REASON}").drop_nulls()
        work.add(found)
        return [Check(REASON, pl.col(f"_{REASON}").is_not_null(), pl.col(f"_{REASON}"))]

    return section


def _final_answers(work: Work) -> pl.DataFrame:
    """(ROW, CONTENT, _LAST, _INDENTED, _WORDS): each sft record's last assistant turn, its last non-blank
    line and that line's words (unspaced scripts counted by characters, as the length rule does)."""
    turns = work.turns()
    assistant = (pl.col("kind") == "sft") & (pl.col("side") == "messages") & (pl.col("role") == "assistant")
    final = turns.filter(assistant).group_by(ROW, maintain_order=True).agg(pl.col(CONTENT).last())
    line = pl.col(CONTENT).str.strip_chars_end().str.extract(r"([^\n]*)$")
    last = line.str.strip_chars()
    lines = with_words(final.select(ROW, last.alias(CONTENT))).select(ROW, word_count().alias(_WORDS))
    indented = line.str.contains(r"^(?:  |\t)") & pl.col(CONTENT).str.contains("\n")
    final = final.with_columns(last.alias(_LAST), indented.alias(_INDENTED))
    return final.join(lines, on=ROW, how="left", maintain_order="left")


def _open_style() -> pl.Expr:
    """Whether the answer's other lines (3+ words, outside code blocks, tables and headings)
    mostly end on a letter or digit too: half of them or more, if any."""
    lines = (
        pl.col(CONTENT).str.strip_chars_end().str.replace(r"[^\n]*$", "")  # not the last line
        .str.replace_all(_CODE_BLOCK, "").str.split("\n")
        .list.eval(pl.element().filter(pl.element().str.contains(_STYLE_LINE)))
    )
    counted = lines.list.len()
    open_ = lines.list.eval(pl.element().str.contains(_OPEN_LINE).cast(pl.UInt32)).list.sum()
    return (counted >= 1) & (open_ * 2 >= counted)
