"""Finding PII in a text and replacing it with typed placeholders.

Each kind is a Python regex, confirmed where a pattern alone is not enough: e-mail addresses;
public IPv4 and IPv6 addresses (checked by `ipaddress`: loopback, private and documentation
ranges are kept, and so are dotted version numbers); credit card numbers (13-19 digits, a known
issuer prefix and the Luhn checksum, not the digits of a decimal); phone numbers; secrets (cloud
and API key formats, tokens, private-key blocks).

Phone numbers are found by the shapes people write them in, not by whether the number is
assigned (`phonenumbers`' validity knows only assigned area codes): a + country code and digit
groups; a North American number as (NXX) NXX-XXXX, NXX-NXX-XXXX, NXX.NXX.XXXX or NXX NXX XXXX;
a national number with its trunk 0 (UK 07945 813639, DE 030 98011464, FR 06 78 17 04 17, IN
067266 69357, JP 03-5682-9904, ...); any other run of 7-15 digits only right after a word such as
"phone", "tel", "call", "mobile", "fax", "contact". `phonenumbers` then says whether the digits
are a *possible* number (the right length) for the + code, the US or one of `NATIONAL_REGIONS`.
A candidate written as arithmetic (an operator before or after it) is not a number.

Two kinds of text are left alone by default: documentation addresses (RFC 2606/6761 domains
`example.com/.net/.org` and `*.example`, `*.test`, `*.invalid`, `*.localhost`, and placeholder
labels such as `example-domain.com`, `yourdomain.com`), and phone numbers, IP addresses and card
numbers inside code (fenced blocks, `inline spans`, reST literal blocks after `::`), where digits
are constants, versions and test data. Secrets and e-mail addresses are redacted in code too:
a key or an address pasted into code is the most common leak.

`PREFILTER` is one cheap pattern per kind that matches wherever the kind can: polars runs them
over every record (vectorised, no lookarounds), and only the texts they match are scanned here.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable

import phonenumbers

PLACEHOLDER = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "ip": "<IP_ADDRESS>",
    "credit_card": "<CREDIT_CARD>",
    "secret": "<SECRET>",
}
KINDS = tuple(PLACEHOLDER)
NATIONAL_REGIONS = ("US", "GB", "DE", "FR", "IN", "AU", "JP", "BR", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "IE", "NZ", "ZA")

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b")
IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]\w)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Digits as cards are written: one run of 13-19, 4-4-4-4(-3) or Amex's 4-6-5, one separator.
CARD = re.compile(r"(?<![\d-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{5})(?![\d-])")
# Issuer prefixes (IIN ranges) of the common networks: Visa, Mastercard, Amex, Discover, JCB,
# Diners, UnionPay, Maestro.
CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|6(?:011|5|4[4-9])|35|3(?:0[0-5]|[689])|62|5[06-8]|6\d")
SECRETS = [
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
    r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
    r"\bgh[pousr]_[A-Za-z0-9]{36,}|\bgithub_pat_[A-Za-z0-9_]{22,}",  # GitHub tokens
    r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
    r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"(?i:aws_?secret_?access_?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}\b",  # and their secrets
    r"\bAIza[0-9A-Za-z_-]{35}(?![\w-])",  # Google API keys (may end in - or _)
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
    r"\bnpm_[A-Za-z0-9]{36}\b",  # npm
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JSON web tokens
]
SECRET = re.compile("|".join(f"(?:{p})" for p in SECRETS))
PHONE_HINT = re.compile(r"\d(?:[\s().-]{0,3}\d){6}")
# Phone shapes (see the module docstring). Not glued to a word, path, version or another number.
_NOT_AFTER = r"(?<![\w.+\-/#@$%])"
_NOT_BEFORE = r"(?![\w@/]|[.\-]\d)"
# Groups after the country code need a separator (or parentheses) between them: linear to match.
INTL_PHONE = re.compile(
    _NOT_AFTER + r"(?:\+[1-9]\d*|00[1-9]\d{0,2}(?=[ .\-(]))(?:(?:[ .\-]?\(\d{1,4}\)[ .\-]?|[ .\-])\d+)*" + _NOT_BEFORE
)
NANP_PHONE = re.compile(
    _NOT_AFTER + r"(?:1[ .\-])?(?:\([2-9]\d\d\) ?|[2-9]\d\d([ .\-]))[2-9]\d\d(?(1)\1|[ .\-])\d{4}" + _NOT_BEFORE
)
TRUNK_PHONE = re.compile(_NOT_AFTER + r"(?:\(0[1-9]\d{0,4}\) ?|0[1-9]\d{0,4}[ .\-])\d{2,8}(?:[ .\-]\d{2,8})*" + _NOT_BEFORE)
CONTEXT_PHONE = re.compile(
    r"(?i:\b(?:phone|tel|telephone|call|mobile|cell|fax|contact|whatsapp|sms|hotline)\b)[^\w\n]{0,4}"
    r"(?:[a-z]+[^\w\n]{1,3}){0,2}(" + _NOT_AFTER + r"\+?\(?\d[\d ().\-]{5,18}\d)" + _NOT_BEFORE
)
# An operator next to the digits: arithmetic or code, not a number someone dials.
MATH_BEFORE = re.compile(r"(?:[=*/%^<>]|\d[ \t]*[-+])[ \t]*$")
MATH_AFTER = re.compile(r"[ \t]*(?:[=*/%^<>]|[-+][ \t]*\(?\d)")
DATE = re.compile(r"(?:0?[1-9]|[12]\d|3[01])([ .\-])(?:0?[1-9]|1[0-2])\1(?:1[6-9]|20)\d\d")  # 06-11-2008
# Code: fenced blocks, `inline` / ``reST`` spans, and reST literal blocks (an indented block
# after a paragraph ending in `::` or a code directive).
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)[^\n]+?(?<!`)\1(?!`)")
LITERAL_INTRO = re.compile(r"::\s*$|^\s*\.\. (?:code-block|code|sourcecode)::")
# Dotted numbers that read as versions rather than addresses.
VERSION_CUE = re.compile(r"(?i:\b(?:v|ver|version|versions|release|kernel|python|build|firmware)\.?\s*)$")
DOCUMENTATION_TLDS = {"example", "test", "invalid", "localhost"}
# Names written to show a format: example@..., you@yourdomain.com, user@example-domain.com.
PLACEHOLDER_LABEL = re.compile(
    r"(?i)example(?:[-_]?[a-z]+)?"
    r"|your[-_.]?(?:domain|company|email|e-mail|mail|site|website|server|host|name|org|address|user(?:name)?)"
)

# Supersets of the patterns above in polars' (Rust) regex syntax.
PREFILTER = {
    "email": r"[A-Za-z0-9]@[A-Za-z0-9-]+\.",
    "phone": r"\d(?:[\s().-]{0,3}\d){6}",
    "ip": r"\d\.\d{1,3}\.\d{1,3}\.\d|[0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f]*:",
    "credit_card": r"\d{4}[ -]?\d{4}[ -]?\d{4}|\d{4}[ -]?\d{6}[ -]?\d{5}",
    "secret": r"PRIVATE KEY|sk-|[sprk]k_(?:live|test)_|gh[pousr]_|github_pat_|glpat-|A[KSBC][IC]A[0-9A-Z]{16}|"
    r"(?i:aws_?secret)|AIza|xox[abposr]-|hf_|npm_|eyJ",
}


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return CARD_PREFIX.match(digits) is not None and luhn(digits)


def _in_decimal(text: str, start: int, end: int) -> bool:
    """Digits after a decimal point or before one (50.2654824574366 is a number, not a card)."""
    return re.match(r"\d[.,]", text[max(0, start - 2):start]) is not None or re.match(r"[.,]\d", text[end:end + 2]) is not None


def _is_ip(text: str, start: int, end: int) -> bool:
    """A public address: loopback, private, link-local and documentation ranges identify no one,
    nor do version numbers (1.5.0.3, `Python 2.6.18.6`) or network addresses (x.x.x.0)."""
    match = text[start:end]
    if ":" in match:
        # Three groups at least: `a::b`, `ham[1::3]`, `3.13::` are C++, slices and reST, not addresses.
        if sum(1 for group in match.split(":") if group) < 3:
            return False
    else:
        octets = [int(o) for o in match.split(".")]
        if all(o < 10 for o in octets) or octets[3] == 0 or VERSION_CUE.search(text[max(0, start - 12):start]):
            return False
    try:
        return ipaddress.ip_address(match).is_global
    except ValueError:
        return False


def _documentation_email(address: str) -> bool:
    """RFC 2606/6761 names (example.com, *.example, *.test, *.invalid, *.localhost) and
    placeholders (example@..., you@yourdomain.com, example-domain.com): written to show a format."""
    local, domain = address.lower().rsplit("@", 1)
    labels = domain.split(".")
    return labels[-1] in DOCUMENTATION_TLDS or any(PLACEHOLDER_LABEL.fullmatch(x) for x in [local, *labels[:-1]])


def _possible(candidate: str) -> bool:
    """7-15 digits that make a possible number: for the + (or 00) country code, for a region
    whose national numbers start with the trunk 0, or else as a North American number."""
    digits = sum(ch.isdigit() for ch in candidate)
    if not 7 <= digits <= 15:
        return False
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    if candidate.startswith("+"):
        regions: Iterable[str | None] = (None,)
    else:
        regions = NATIONAL_REGIONS[1:] if candidate.lstrip("(").startswith("0") else ("US",)
    for region in regions:
        try:
            if phonenumbers.is_possible_number(phonenumbers.parse(candidate, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def _counting(groups: list[str]) -> bool:
    """01 02 03 04 05: equal groups counting up or down are an enumeration."""
    values = [int(g) for g in groups]
    steps = {b - a for a, b in zip(values, values[1:], strict=False)}
    return len(groups) >= 3 and len({len(g) for g in groups}) == 1 and len(steps) == 1 and steps != {0}


def _phone_spans(text: str) -> list[tuple[int, int]]:
    """Candidates of every shape that phonenumbers finds possible, trimmed of trailing digit
    groups that make them too long (a year or a count after the number)."""
    found = []
    for pattern, group in ((INTL_PHONE, 0), (NANP_PHONE, 0), (TRUNK_PHONE, 0), (CONTEXT_PHONE, 1)):
        for m in pattern.finditer(text):
            start, end = m.span(group)
            candidate = text[start:end].rstrip(" .-(")
            cuts = [c.start() for c in re.finditer(r"[ .\-]\d+$|[ .\-]\d+(?=[ .\-])", candidate)]
            for cut in [len(candidate), *reversed(cuts)]:
                number = candidate[:cut]
                if _possible(number):
                    break
            else:
                continue
            groups = re.findall(r"\d+", number)
            if _counting(groups) or DATE.fullmatch(number):
                continue
            line_start = text.rfind("\n", 0, start) + 1
            if MATH_BEFORE.search(text[line_start:start]) or MATH_AFTER.match(text, start + len(number)):
                continue
            found.append((start, start + len(number)))
    return found


def _code_regions(text: str) -> list[tuple[int, int]]:
    """(start, end) of fenced blocks, inline code spans and reST literal blocks."""
    regions, at = [], 0
    fence: tuple[int, str] | None = None  # (start, marker) of the open fence
    literal_indent: int | None = None  # of the line that introduced the literal block we are in
    for line in text.splitlines(keepends=True):
        end = at + len(line)
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[1][0] and len(m.group(1)) >= len(fence[1]):
                regions.append((fence[0], end))
                fence = None
        elif m:
            fence = (at, m.group(1))
        else:
            indent = len(line) - len(line.lstrip())
            if literal_indent is not None and line.strip() and indent <= literal_indent:
                literal_indent = None  # a line indented no deeper than the intro: text again
            if literal_indent is not None:
                regions.append((at, end))
            else:
                regions += [(at + s.start(), at + s.end()) for s in CODE_SPAN.finditer(line)]
                if LITERAL_INTRO.search(line.rstrip("\n")):
                    literal_indent = indent
        at = end
    if fence:  # an unclosed fence runs to the end
        regions.append((fence[0], len(text)))
    return regions


def find(text: str, kinds: Iterable[str], *, skip_code: bool = True,
         keep_documentation: bool = True) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every PII span of `kinds` in text, non-overlapping, in order; of
    overlapping spans the longest wins (a card number is not also a phone number).
    `skip_code`: phone numbers, IP addresses and card numbers inside code are left alone;
    `keep_documentation`: so are e-mail addresses at documentation domains."""
    kinds = set(kinds)
    spans: list[tuple[int, int, str]] = []
    if "secret" in kinds:
        spans += [(m.start(), m.end(), "secret") for m in SECRET.finditer(text)]
    if "email" in kinds:
        spans += [(m.start(), m.end(), "email") for m in EMAIL.finditer(text)
                  if not (keep_documentation and _documentation_email(m.group()))]
    numbers: list[tuple[int, int, str]] = []
    if "ip" in kinds:
        numbers += [(m.start(), m.end(), "ip") for m in IPV4.finditer(text) if _is_ip(text, m.start(), m.end())]
        numbers += [(m.start(), m.end(), "ip") for m in IPV6.finditer(text) if _is_ip(text, m.start(), m.end())]
    if "credit_card" in kinds:
        numbers += [(m.start(), m.end(), "credit_card") for m in CARD.finditer(text)
                    if _is_card(m.group()) and not _in_decimal(text, m.start(), m.end())]
    if "phone" in kinds and PHONE_HINT.search(text):
        numbers += [(start, end, "phone") for start, end in _phone_spans(text)]
    if skip_code and numbers:
        code = _code_regions(text)
        numbers = [n for n in numbers if all(n[1] <= s or n[0] >= e for s, e in code)]
    spans += numbers
    # Longest first, then earliest; equal spans: the kind found first above (secret, e-mail, ...).
    chosen: list[tuple[int, int, str]] = []
    for span in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):
        if all(span[1] <= c[0] or span[0] >= c[1] for c in chosen):
            chosen.append(span)
    return sorted(chosen)


def redact(text: str, kinds: Iterable[str], **options: bool) -> tuple[str, Counter[str]]:
    """The text with every PII span replaced by its placeholder, and the spans found per kind
    (`options`: those of `find`)."""
    spans = find(text, kinds, **options)
    if not spans:
        return text, Counter()
    parts, at = [], 0
    for start, end, kind in spans:
        parts += [text[at:start], PLACEHOLDER[kind]]
        at = end
    parts.append(text[at:])
    return "".join(parts), Counter(kind for _, _, kind in spans)
