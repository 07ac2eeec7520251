"""Finding PII in a text and replacing it with typed placeholders.

Each kind is a Python regex, confirmed where a pattern alone is not enough: e-mail addresses;
public IPv4 and IPv6 addresses (checked by `ipaddress`: loopback, private and documentation
ranges are kept); credit card numbers (13-19 digits, a known
issuer prefix and the Luhn checksum); phone numbers (found and validated by `phonenumbers`,
Google's libphonenumber metadata: national numbers of `PHONE_REGION` and any number written
with its + country code, grouped as the numbering plan groups them); secrets (cloud and API
key formats, tokens, private-key blocks).

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
PHONE_REGION = "US"  # how numbers without a + country code are read

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
    r"\bAIza[0-9A-Za-z_-]{35}\b",  # Google API keys
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
    r"\bnpm_[A-Za-z0-9]{36}\b",  # npm
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JSON web tokens
]
SECRET = re.compile("|".join(f"(?:{p})" for p in SECRETS))
PHONE_HINT = re.compile(r"\d(?:[\s().-]{0,3}\d){6}")

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


def _is_ip(match: str) -> bool:
    """A public address: loopback, private, link-local and documentation ranges identify no one."""
    # Two digits at least: C++ `a::b` and the like are valid IPv6 spellings, not addresses.
    if ":" in match and sum(ch.isdigit() for ch in match) < 2:
        return False
    try:
        return ipaddress.ip_address(match).is_global
    except ValueError:
        return False


def _phones(text: str) -> list[tuple[int, int]]:
    """Valid numbers with their digits grouped as the numbering plan groups them (so digit
    tables, counters and bare integers are not numbers), not inside a longer token."""
    found = []
    for m in phonenumbers.PhoneNumberMatcher(text, PHONE_REGION, leniency=phonenumbers.Leniency.EXACT_GROUPING):
        if m.start and (text[m.start - 1].isalnum() or text[m.start - 1] in "-_."):
            continue
        found.append((m.start, m.end))
    return found


def find(text: str, kinds: Iterable[str]) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every PII span of `kinds` in text, non-overlapping, in order; of
    overlapping spans the longest wins (a card number is not also a phone number)."""
    kinds = set(kinds)
    spans: list[tuple[int, int, str]] = []
    if "secret" in kinds:
        spans += [(m.start(), m.end(), "secret") for m in SECRET.finditer(text)]
    if "email" in kinds:
        spans += [(m.start(), m.end(), "email") for m in EMAIL.finditer(text)]
    if "ip" in kinds:
        spans += [(m.start(), m.end(), "ip") for m in IPV4.finditer(text) if _is_ip(m.group())]
        spans += [(m.start(), m.end(), "ip") for m in IPV6.finditer(text) if _is_ip(m.group())]
    if "credit_card" in kinds:
        spans += [(m.start(), m.end(), "credit_card") for m in CARD.finditer(text) if _is_card(m.group())]
    if "phone" in kinds and PHONE_HINT.search(text):
        spans += [(start, end, "phone") for start, end in _phones(text)]
    # Longest first, then earliest; equal spans: the kind found first above (secret, e-mail, ...).
    chosen: list[tuple[int, int, str]] = []
    for span in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):
        if all(span[1] <= c[0] or span[0] >= c[1] for c in chosen):
            chosen.append(span)
    return sorted(chosen)


def redact(text: str, kinds: Iterable[str]) -> tuple[str, Counter[str]]:
    """The text with every PII span replaced by its placeholder, and the spans found per kind."""
    spans = find(text, kinds)
    if not spans:
        return text, Counter()
    parts, at = [], 0
    for start, end, kind in spans:
        parts += [text[at:start], PLACEHOLDER[kind]]
        at = end
    parts.append(text[at:])
    return "".join(parts), Counter(kind for _, _, kind in spans)
