"""Mask secrets and personal data in captured bodies before they leave the process (docs/architecture.md, invariant 8).

Masked: provider and tokentrail API keys, bearer tokens, other well-known token formats,
email addresses, phone numbers (international or grouped formats with 10-15 digits) and card
numbers (13-19 digits passing the Luhn check, so ids and counts are left alone). Each match
becomes `[REDACTED:<kind>]`. Capture is off unless a tenant turns it on, so this only runs
for those tenants.
"""

from __future__ import annotations

import re

_SECRETS = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{8,}"  # Anthropic keys
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"  # OpenAI keys
    r"|tt_[0-9a-f]{16}_[A-Za-z0-9_\-]+"  # tokentrail keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"  # bearer tokens
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+"  # JWTs
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\d.])\d(?:[ \-]?\d){12,18}(?![\d.])")
_PHONE = re.compile(
    r"(?<![\w+])"
    r"(?:\+\d{1,3}[\s.\-]?)?"  # country code
    r"(?:\(\d{1,4}\)[\s.\-]?)?"  # area code in parentheses
    r"\d{2,4}(?:[\s.\-]\d{2,4}){1,4}"  # grouped digits
    r"(?!\w)"
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[REDACTED:card]" if luhn_valid(digits) else match.group()


def _phone(match: re.Match) -> str:
    text = match.group()
    digits = sum(char.isdigit() for char in text)
    grouped = text.startswith(("+", "(")) or any(sep in text for sep in " .-")
    return "[REDACTED:phone]" if 10 <= digits <= 15 and grouped else text


def redact(text: str) -> str:
    text = _SECRETS.sub("[REDACTED:api_key]", text)
    text = _EMAIL.sub("[REDACTED:email]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)
