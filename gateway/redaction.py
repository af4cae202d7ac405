"""Mask secrets and personal data in captured bodies before they leave the process (docs/architecture.md, invariant 8).

Masked, each match becoming `[REDACTED:<kind>]`:
- `api_key`: OpenAI (`sk-`, `sk-proj-`...), Anthropic (`sk-ant-`), tokentrail (`tt_<id>_<secret>`),
  Stripe-style (`sk_live_`, `sk_test_`, `rk_live_`, `rk_test_`, `whsec_`), AWS access key ids,
  GitHub, Slack and JWT tokens, and `Bearer <token>`;
- `private_key`: PEM private keys (`-----BEGIN ... PRIVATE KEY-----` to its END line, or to the
  end of the text when the END line is missing);
- `url_credentials`: the `user:password@` part of a URL (`https://bob:pw@host/` keeps the host);
- `email`; `ssn`: US social security numbers (`123-45-6789`, invalid area/group/serial left);
- `phone`: 10-15 digits, international or grouped; `card`: 13-19 digits passing the Luhn check
  (so ids and counts are left alone).

Linear time, and fast where it can be: every pattern starts with a literal or a character
class, so the engine jumps between places a match could start with a fast scan, and then checks
the character before that place (a lookbehind) and uses possessive or bounded repetition, so no
input makes it rescan what it already read (the email pattern used to be quadratic: 3.6 s for
64 KiB of `a`). Emails are found from their `@` and PEM keys from their BEGIN line, so text
between costs a literal search. Emails and numbers (SSNs, cards, phones) are the passes whose
cost follows the matches: each `@` and each digit group needs a check (the local part, Luhn,
SSN ranges, digit count), 1-3 µs each in Python, so text made of digit groups took 90-250 ms
per MiB. Those two passes are compiled (`gateway/_redaction.c`, built by `pip install`; the
rules are `_mask_emails`, `_NUMBERS` and `_number` below, which stay as the reference and as
the fallback when no C compiler was there at install). Separators in numbers are ASCII
whitespace, `.` and `-`. `bench/gateway/redaction.py` measures adversarial inputs against the
previous patterns. Capture is off unless a tenant turns it on, so this only runs for those
tenants.
"""

from __future__ import annotations

import logging
import re

try:
    from gateway import _redaction as _compiled
except ImportError:  # built without a C compiler: the regex passes below do the same, slower
    _compiled = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_TOKEN = r"A-Za-z0-9_\-"
_API_KEY = "[REDACTED:api_key]"
_KEY_SHAPES = (
    # (literal every match starts with, the rest): the lookbehind after the literal keeps matches
    # at the start of a token.
    ("sk-", rf"(?:ant-[{_TOKEN}]{{8,}}+|(?:proj-|svcacct-|admin-)?[{_TOKEN}]{{16,}}+)"),  # Anthropic, OpenAI
    ("tt_", rf"[0-9a-f]{{16}}_[{_TOKEN}]++"),  # tokentrail keys
    ("sk_", r"(?:live|test)_[A-Za-z0-9]{8,}+"),  # Stripe-style secret keys
    ("rk_", r"(?:live|test)_[A-Za-z0-9]{8,}+"),  # Stripe-style restricted keys
    ("whsec_", r"[A-Za-z0-9]{16,}+"),  # webhook signing secrets
    ("AKIA", r"[0-9A-Z]{16}(?![0-9A-Za-z])"),  # AWS access key ids
    ("gh", r"[pousr]_[A-Za-z0-9]{20,}+"),  # GitHub tokens
    ("xox", r"[abprs]-[A-Za-z0-9\-]{10,}+"),  # Slack tokens
    ("eyJ", rf"[{_TOKEN}]{{8,}}+\.[{_TOKEN}]{{8,}}+\.[{_TOKEN}]++"),  # JWTs
)
_SECRETS = [
    # (literal every match contains, pattern, replacement): each pass is a fast literal search,
    # and the lookbehind after the literal keeps matches at the start of a token.
    (literal, re.compile(literal + rf"(?<![{_TOKEN}]{literal})" + rest), _API_KEY)
    for literal, rest in _KEY_SHAPES
] + [
    # bearer tokens: the word stays, the token goes
    (word, re.compile(rf"({word}(?<![A-Za-z]{word})[ \t]++)[A-Za-z0-9._~+/\-]{{8,}}+=*+"), rf"\1{_API_KEY}")
    for word in ("Bearer", "bearer", "BEARER")
]
_PRIVATE_KEY_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]++ ){0,4}PRIVATE KEY-----")
_PRIVATE_KEY_END = re.compile(r"-----END (?:[A-Z0-9]++ ){0,4}PRIVATE KEY-----")
_URL_CREDENTIALS = re.compile(
    # anchored on the literal `://` (a fast search); whatever precedes it is kept, so any scheme counts
    r"://[^\s/?#@:]{1,256}+:[^\s/?#@]{1,256}+@"
)
_LOCAL = r"A-Za-z0-9._%+\-"
_EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9\-]++\.)+[A-Za-z]{2,}+(?![A-Za-z0-9\-])")
"""From the `@` on (a fast literal search); the local part is then read backwards from it."""
_LOCAL_PART = re.compile(rf"[{_LOCAL}]{{1,{64 * 4}}}\Z")
"""The run of address characters just before an `@` (searched with the `@` as the end; RFC 5321
allows 64, so four times that is plenty and keeps the look-back bounded)."""
_SEPARATOR = r"[ \t\n\r\f\v.\-]"
_PHONE_TAIL = rf"(?:{_SEPARATOR}[0-9]{{2,4}}){{1,4}}(?![0-9A-Za-z_])"
_NUMBERS = re.compile(
    # As for emails, the first digit, `+` or `(` is consumed first (a fast scan to the next one);
    # then which character it was picks the shapes that can follow.
    r"[0-9+(](?<![0-9A-Za-z_+.\-].)(?:"
    r"(?<=[0-9])(?:"
    r"(?P<ssn>[0-9]{2}-[0-9]{2}-[0-9]{4}(?![0-9\-]))"
    r"|(?P<card>(?:[ \-]?[0-9]){12,18}(?![0-9.]))"
    r")"
    r"|(?P<phone>"
    rf"(?<=[0-9])[0-9]{{1,3}}{_PHONE_TAIL}"  # grouped digits
    rf"|(?<=\+)[0-9]{{1,3}}{_SEPARATOR}?(?:\([0-9]{{1,4}}\){_SEPARATOR}?)?[0-9]{{2,4}}{_PHONE_TAIL}"  # country code
    rf"|(?<=\()[0-9]{{1,4}}\){_SEPARATOR}?[0-9]{{2,4}}{_PHONE_TAIL}"  # area code in parentheses
    r"))"
)
_DOUBLED_DIGIT = str.maketrans("0123456789", "0246813579")
"""A digit doubled, minus 9 when over 9 (Luhn's step), as a digit."""
_SEPARATORS = b" \t\n\r\f\v.-+()"


def luhn_valid(digits: str) -> bool:
    """Luhn check of ASCII digits with string operations only (a card-dense text calls this per
    group, so no per-digit Python loop)."""
    kept, doubled = digits[-1::-2], digits[-2::-2].translate(_DOUBLED_DIGIT)
    return (sum(kept.encode()) + sum(doubled.encode()) - 48 * len(digits)) % 10 == 0


def _number(match: re.Match[str]) -> str:
    """Which kind a digit group is, decided on its digits: an SSN with a valid area, group and
    serial; a card passing Luhn; a phone number of 10-15 digits (the pattern only matches
    phone numbers written grouped)."""
    text = match[0]
    kind = match.lastgroup
    if kind == "card":
        return "[REDACTED:card]" if luhn_valid(text.replace(" ", "").replace("-", "")) else text
    if kind == "ssn":
        area, group, serial = text.split("-")
        valid = area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
        return "[REDACTED:ssn]" if valid else text
    digits = len(text.encode().translate(None, _SEPARATORS))
    return "[REDACTED:phone]" if 10 <= digits <= 15 else text


def _mask_private_keys(text: str) -> str:
    """Each PEM private key from its BEGIN line to its END line, or to the end of the text when
    the END line is missing (literal searches, no per-character matching in between)."""
    pieces: list[str] = []
    position = 0
    while begin := _PRIVATE_KEY_BEGIN.search(text, position):
        end = _PRIVATE_KEY_END.search(text, begin.end())
        pieces += (text[position : begin.start()], "[REDACTED:private_key]")
        position = end.end() if end else len(text)
    return "".join(pieces) + text[position:]


def _mask_emails(text: str) -> str:
    """Each `local@domain.tld`: found by its domain (a search for `@`), then the local part that
    ends at the `@`, so text without a domain after an `@` costs a literal scan."""
    pieces: list[str] = []
    position = 0
    for domain in _EMAIL_DOMAIN.finditer(text):
        at = domain.start()
        local = _LOCAL_PART.search(text, max(position, at - 64 * 4), at)
        if local is None:
            continue
        pieces += (text[position : local.start()], "[REDACTED:email]")
        position = domain.end()
    return "".join(pieces) + text[position:]


def redact(text: str) -> str:
    """`text` with everything listed in the module docstring masked. A pass that needs a
    character or literal absent from the text is skipped (most prompts have no `@`)."""
    if "PRIVATE KEY-----" in text:
        text = _mask_private_keys(text)
    for literal, pattern, replacement in _SECRETS:
        if literal in text:
            text = pattern.sub(replacement, text)
    if "://" in text:
        text = _URL_CREDENTIALS.sub("://[REDACTED:url_credentials]@", text)
    return mask_emails_and_numbers(text)


def regex_emails_and_numbers(text: str) -> str:
    """The email and number passes in Python: the reference for the compiled ones."""
    if "@" in text:
        text = _mask_emails(text)
    return _NUMBERS.sub(_number, text)


def compiled_emails_and_numbers(text: str) -> str:
    """The same passes compiled (gateway/_redaction.c), on the text's UTF-8 bytes."""
    data = text.encode("utf-8", "surrogatepass")
    if b"@" in data:
        data = _compiled.mask_emails(data)
    return _compiled.mask_numbers(data).decode("utf-8", "surrogatepass")


if _compiled is None:
    log.warning(
        "gateway/_redaction.c was not built (no C compiler at install): redaction of dense emails and "
        "digit groups runs on the regex passes, 5-15x slower; `make install` builds it"
    )
    mask_emails_and_numbers = regex_emails_and_numbers
else:
    mask_emails_and_numbers = compiled_emails_and_numbers
