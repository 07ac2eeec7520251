"""Does a candidate pair of semantic dedup ask for the same thing? A lexical check of meaning.

Sentence embeddings place two instructions that share almost every word close together even
when the few words that differ change the task: "convert decimal to binary" and "convert binary
to decimal", "sort ascending" and "sort descending", a Python and a JavaScript selection sort,
"maximum of two numbers" and "average of four numbers". The encoder finds the candidates (cosine
>= threshold); `different_task` then reads the two texts and vetoes the merge when the words that
differ between them change the task rather than its wording:

- **contrast**: one text has a word the other lacks, and the other has a word of the same
  contrast class with another value (ascending / descending, maximum / minimum / average,
  encode / decode, Celsius / Fahrenheit, ...). Synonyms share a value ("largest", "maximum"),
  so a reworded paraphrase is not vetoed;
- **language**: the two texts name or are written in different programming languages (names,
  and a few unmistakable code markers: `def f(...):`, `console.log`, `public static void`);
- **numbers**: each text has a number the other lacks, counted ("3 rows and 4 columns" / "3 rows
  and 3 columns"; number words count: "two" is 2); a number only one side adds (a year, a
  detail) is not a conflict;
- **direction**: a word before "to"/"into" in one text is after it in the other, and the reverse
  for another word (convert X to Y / convert Y to X; flights from A to B / from B to A).

Only candidate pairs are read (a few percent of records), so the check costs nothing next to
embedding. Measured in bench/bench_meaning.py (BENCHMARKS.md, "Meaning-aware semantic dedup").
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

TOKEN = re.compile(r"[a-z][a-z0-9+#]*|\d+(?:[.,]\d+)*")
WINDOW = 3  # content words each side of "to"/"into" read for a direction swap
STOP = frozenset(
    "a an the of in on for and or with by at as is are be this that these those it its from".split()
)

# class -> value -> words. Two words of one class with different values name different tasks.
CONTRAST: dict[str, dict[str, tuple[str, ...]]] = {
    "order": {"asc": ("ascending", "increasing"), "desc": ("descending", "decreasing", "reverse")},
    "aggregate": {
        "max": ("maximum", "max", "largest", "biggest", "highest", "greatest"),
        "min": ("minimum", "min", "smallest", "lowest", "least"),
        "mean": ("average", "mean"), "median": ("median",), "mode": ("mode",),
        "sum": ("sum", "total"), "product": ("product",),
    },
    "length": {"long": ("longest", "longer"), "short": ("shortest", "shorter")},
    "age": {"old": ("oldest", "older"), "young": ("youngest", "younger", "newest")},
    "compare": {"more": ("more", "most", "larger", "bigger", "higher", "greater"),
                "less": ("less", "fewer", "smaller", "lower")},
    "change": {"up": ("increase", "increases", "raise", "rise", "grow"),
               "down": ("decrease", "decreases", "reduce", "lower", "fall", "shrink")},
    "code": {"enc": ("encode", "encoding", "encrypt", "encryption", "compress", "compression", "serialize",
                     "serialise", "serialization"),
             "dec": ("decode", "decoding", "decrypt", "decryption", "decompress", "decompression", "deserialize",
                     "deserialise", "deserialization")},
    "edit": {"add": ("add", "insert", "append", "push"), "remove": ("remove", "delete", "pop", "drop")},
    "arith": {"add": ("add", "plus", "addition"), "sub": ("subtract", "minus", "subtraction"),
              "mul": ("multiply", "times", "multiplication"), "div": ("divide", "division")},
    "case": {"upper": ("uppercase", "upper"), "lower": ("lowercase",)},
    "truth": {"true": ("true",), "false": ("false",)},
    "sign": {"pos": ("positive",), "neg": ("negative",)},
    "parity": {"even": ("even",), "odd": ("odd",)},
    "ends": {"first": ("first", "beginning", "start", "leading"), "last": ("last", "end", "ending", "trailing")},
    "time": {"before": ("before",), "after": ("after",)},
    "side": {"left": ("left",), "right": ("right",)},
    "vertical": {"top": ("top", "above"), "bottom": ("bottom", "below")},
    "axis": {"row": ("row", "rows", "horizontal"), "col": ("column", "columns", "vertical")},
    "set": {"union": ("union",), "inter": ("intersection",), "diff": ("difference",)},
    "incl": {"in": ("include", "includes", "including"), "ex": ("exclude", "excludes", "excluding")},
    "worth": {"good": ("advantages", "benefits", "pros", "strengths"),
              "bad": ("disadvantages", "drawbacks", "cons", "weaknesses", "risks")},
    "same": {"same": ("similarities", "similar"), "diff": ("differences", "different")},
    "eval": {"good": ("best", "good", "positive"), "bad": ("worst", "bad")},
    "trade": {"buy": ("buy", "buying", "purchase"), "sell": ("sell", "selling")},
    "flow": {"imp": ("import", "imports", "importing"), "exp": ("export", "exports", "exporting")},
    "unit": {"c": ("celsius", "centigrade"), "f": ("fahrenheit",), "k": ("kelvin",),
             "km": ("kilometers", "kilometres", "km"), "mi": ("miles", "mile"),
             "kg": ("kilograms", "kg"), "lb": ("pounds", "lbs")},
    "base": {"bin": ("binary",), "dec": ("decimal",), "hex": ("hexadecimal", "hex"), "oct": ("octal",)},
    "direction": {"n": ("north", "northern"), "s": ("south", "southern"), "e": ("east", "eastern"),
                  "w": ("west", "western")},
    "accept": {"yes": ("accept", "agree", "approve", "approved"), "no": ("reject", "disagree", "deny", "denied")},
    "win": {"win": ("win", "won", "wins"), "lose": ("lose", "lost", "loses")},
    "temp": {"hot": ("hot", "warm"), "cold": ("cold", "cool")},
}
LANGUAGES: dict[str, str] = {
    "python": "python", "javascript": "javascript", "js": "javascript", "node": "javascript",
    "nodejs": "javascript", "typescript": "typescript", "java": "java", "c++": "c++", "cpp": "c++",
    "c#": "c#", "csharp": "c#", "ruby": "ruby", "golang": "go", "rust": "rust", "php": "php",
    "swift": "swift", "kotlin": "kotlin", "scala": "scala", "perl": "perl", "haskell": "haskell",
    "matlab": "matlab", "sql": "sql", "bash": "shell", "shell": "shell", "powershell": "powershell",
    "lua": "lua", "julia": "julia", "dart": "dart", "elixir": "elixir", "fortran": "fortran",
    "cobol": "cobol", "html": "html", "css": "css",
}
# (language, literals, pattern): the pattern can only match a text containing one of the
# literals, so a substring test skips most texts before the regex runs (the regexes over whole
# texts were most of the check's time on news-length documents).
CODE_MARKERS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    ("python", ("def ", "elif", "import"),
     re.compile(r"^\s*def \w+\(.*\)\s*(->.*)?:\s*$|^\s*(elif|from \w+ import|import \w+$)", re.M)),
    ("javascript", ("console.log", "function", "const ", "let ", "var ", "=>"),
     re.compile(r"console\.log|\bfunction\s*\w*\s*\(|\b(const|let|var) \w+\s*=|=>\s*\{")),
    ("java", ("public", "System.out.print"),
     re.compile(r"\bpublic\s+(static\s+)?(void|class|int|String)\b|System\.out\.print")),
    ("c++", ("#include", "std::", "cout"), re.compile(r"#include\s*<|std::|\bcout\s*<<")),
    ("shell", ("#!/bin/", "echo "), re.compile(r"^#!/bin/(ba)?sh|^\s*echo \S", re.M)),
)
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    " sixteen seventeen eighteen nineteen twenty".split()
)} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
      "ninety": "90", "hundred": "100", "thousand": "1000", "twice": "2", "double": "2", "triple": "3"}


@lru_cache(maxsize=1)
def _contrast_index() -> dict[str, tuple[tuple[str, str], ...]]:
    index: dict[str, list[tuple[str, str]]] = {}
    for cls, values in CONTRAST.items():
        for value, words in values.items():
            for word in words:
                index.setdefault(word, []).append((cls, value))
    return {w: tuple(v) for w, v in index.items()}


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def different_task(a: str, b: str) -> str | None:
    """Why `a` and `b` ask for different things (contrast, language, numbers, direction), or
    None when nothing in the words that differ says so."""
    if a == b:  # exact copies are most candidate pairs of a large corpus: nothing differs
        return None
    ta, tb = tokens(a), tokens(b)
    sa, sb = set(ta), set(tb)
    if _contrast(sa, sb):
        return "contrast"
    na, nb = _numbers(ta), _numbers(tb)
    if na - nb and nb - na:
        return "numbers"
    if _direction_swapped(ta, tb):
        return "direction"
    la = _languages(a, sa)  # the code markers are the costly part: the second text only if needed
    if la and (lb := _languages(b, sb)) and la != lb:
        return "language"
    return None


def _contrast(a: set[str], b: set[str]) -> bool:
    """Some class has a value only in `a` and another only in `b` (a change, not an addition)."""
    index = _contrast_index()
    va = {cv for w in a - b for cv in index.get(w, ())}
    if not va:
        return False
    vb = {cv for w in b - a for cv in index.get(w, ())}
    shared = {cv for w in a & b for cv in index.get(w, ())}
    va, vb = va - shared - vb, vb - shared - va
    return bool({cls for cls, _ in va} & {cls for cls, _ in vb})


def _languages(text: str, words: set[str]) -> frozenset[str]:
    named = {LANGUAGES[w] for w in words & LANGUAGES.keys()}
    marked = {lang for lang, literals, marker in CODE_MARKERS
              if any(literal in text for literal in literals) and marker.search(text)}
    return frozenset(named | marked)


def _numbers(words: list[str]) -> Counter[str]:
    """The numbers of a text, counted: "3 rows and 4 columns" is not "3 rows and 3 columns"."""
    out: Counter[str] = Counter()
    for w in words:
        if w[0].isdigit():
            n = w.replace(",", "")
            n = n[:-2] if n.endswith(".0") else n
        elif w in NUMBER_WORDS:
            n = NUMBER_WORDS[w]
        else:
            continue
        out[n] += 1
    return out


def _direction_swapped(a: list[str], b: list[str]) -> bool:
    """A word x before "to"/"into" in `a` is after it in `b`, a word y the other way round, and
    x comes first in `a`, y in `b` (a long text has many "to"s: the order of the two words'
    first occurrences keeps chance matches between them out)."""
    sides_a, sides_b = _around_to(a), _around_to(b)
    if not sides_a or not sides_b:
        return False
    crossed = [(x, y) for left_a, right_a in sides_a for left_b, right_b in sides_b
               for x in left_a & right_b for y in right_a & left_b if x != y]
    if not crossed:  # most pairs: no word changes side, no positions needed
        return False
    first_a, first_b = _first_positions(a), _first_positions(b)
    return any(first_a[x] < first_a[y] and first_b[y] < first_b[x] for x, y in crossed)


def _first_positions(words: list[str]) -> dict[str, int]:
    # Built from the end, so each word's last assignment is its first position.
    return dict(zip(reversed(words), range(len(words) - 1, -1, -1), strict=True))


def _around_to(words: list[str]) -> list[tuple[set[str], set[str]]]:
    content = [w for w in words if w not in STOP]
    return [
        (set(content[max(0, i - WINDOW) : i]), set(content[i + 1 : i + 1 + WINDOW]))
        for i, w in enumerate(content)
        if w in ("to", "into")
    ]
