"""Secrets never leave the process: every log record (Prefect's included) and every error message
shown is masked for the API keys this run read, and for Authorization / api-key header values.

A key is masked wherever 8 or more of its characters appear in a row (a server that echoes the
key minus its last characters still leaks most of it), so `sk-PLANTED-abc` minus `abc` is masked
too. Installed once, as a log-record factory: it runs before any handler or filter, for every logger.
"""

from __future__ import annotations

import logging
import re
import threading

MIN_FRAGMENT = 8  # shorter runs of a key's characters are too common to mask
MASK = "***"
_HEADER = re.compile(
    r"(?i)\b(authorization|x-api-key|api[-_]key)(['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?([^\s'\",;}]+)"
)
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def register_secret(value: str) -> None:
    """Mask `value` (and its fragments) in every later log record and masked message."""
    global _installed
    with _lock:
        _secrets.add(value)
        if not _installed:
            _install()
            _installed = True


def mask_secrets(text: str) -> str:
    """`text` with every run of MIN_FRAGMENT or more characters of a registered secret, and every
    Authorization / api-key header value, replaced by ***."""
    text = _HEADER.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}{MASK}", text)
    for secret in tuple(_secrets):
        text = _mask_fragments(text, secret)
    return text


def _mask_fragments(text: str, secret: str) -> str:
    if len(secret) < MIN_FRAGMENT:
        return text.replace(secret, MASK) if secret else text
    grams = {secret[i : i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1)}
    out, i, start = [], 0, 0
    while i <= len(text) - MIN_FRAGMENT:
        if text[i : i + MIN_FRAGMENT] not in grams:
            i += 1
            continue
        end = i + MIN_FRAGMENT
        while end < len(text) and text[i : end + 1] in secret:  # grow the match as far as the key goes
            end += 1
        out += [text[start:i], MASK]
        i = start = end
    return "".join([*out, text[start:]])


def _install() -> None:
    make_record = logging.getLogRecordFactory()

    def masked_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if _secrets:
            # Formatted here, once: the arguments may carry the secret as well as the message.
            record.msg, record.args = mask_secrets(record.getMessage()), None
            if record.exc_info:
                record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(masked_record)
