"""PII: e-mail addresses, phone numbers, IP addresses, card numbers and secrets found
(`detect`) and redacted to typed placeholders, or their records dropped (`stage`)."""

from curation.pii.stage import build_pii_stage

__all__ = ["build_pii_stage"]
