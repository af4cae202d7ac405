"""Bounds on every client-controlled value that enters a record (docs/gateway.md, "Bounds").

A record the flows would reject (`schemas.models.RawCall`), or one too large for Kafka, must
never follow a 200: so a value the client is wrong about gets a 400 in the provider's shape
before anything goes upstream, and a value that is only informational is replaced or cut
(and, when it came from the provider, redacted). Pure functions, no aiohttp.
"""

from __future__ import annotations

import re

from gateway.redaction import redact

MAX_ID_CHARS = 256
"""Request ids, session ids, model names and end-user ids: `RawCall`'s `NonEmpty` bound."""
MAX_TRACESTATE_CHARS = 512
"""W3C trace context: a longer `tracestate` may be dropped."""
MAX_KEY_CHARS = 512
"""A presented credential longer than this is not one of ours (they are 60 characters)."""

_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def visible_ascii(value: str) -> bool:
    """Printable ASCII without spaces: what an id may be made of (header-safe, JSON-safe)."""
    return value.isascii() and value.isprintable() and " " not in value


def request_id(value: str | None) -> tuple[str | None, str | None]:
    """(the client's x-request-id, or None to mint one; why it is refused, or None)."""
    if not value:
        return None, None
    if len(value) > MAX_ID_CHARS or not visible_ascii(value):
        return None, f"x-request-id must be 1 to {MAX_ID_CHARS} printable ASCII characters without spaces"
    return value, None


def session_id(value: str | None) -> tuple[str | None, str | None]:
    """(x-tokentrail-session, or None; why it is refused, or None). Any printable text."""
    if value is None:
        return None, None
    if not value or len(value) > MAX_ID_CHARS or not value.isprintable():
        return None, f"x-tokentrail-session must be 1 to {MAX_ID_CHARS} printable characters"
    return value, None


def body_string(name: str, value: object) -> tuple[str | None, str | None]:
    """(a recorded string field of the request body, `model` or `user`; why it is refused).
    A value of another type is not recorded (the provider answers it); an over-long string is
    refused: no model name or end-user id is that long, and it would reach the record."""
    if type(value) is not str:
        return None, None
    if len(value) > MAX_ID_CHARS:
        return None, f"'{name}' is {len(value)} characters long; the gateway accepts at most {MAX_ID_CHARS}"
    return value, None


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C `traceparent` (version 00-fe), else None: an invalid one is
    informational only, so it is replaced by a new one rather than refused."""
    if traceparent is None or len(traceparent) > 128:
        return None
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None or (traceparent[:2] == "00" and len(traceparent) != 55):
        return None
    return match.group(1)


def tracestate(value: str) -> bool:
    """Whether a client's `tracestate` may go upstream with its (valid) `traceparent`."""
    return len(value) <= MAX_TRACESTATE_CHARS and visible_ascii(value.replace(" ", ""))


def presented_key(value: str | None) -> str | None:
    """A presented credential as text that can be hashed and logged: header bytes that were not
    UTF-8 (decoded by aiohttp with surrogate escapes) are re-read as Latin-1, and an over-long
    value is cut (it is refused as not ours either way)."""
    if value is None:
        return None
    value = value[: MAX_KEY_CHARS + 1]
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


_PROVIDER_STRINGS: dict[str, str] = {}
_PROVIDER_STRINGS_MAX = 1024


def from_provider(value: str | None) -> str | None:
    """A string the provider reported (served model, error type or code): informational, so cut
    to the bound and redacted, never refused. Providers repeat a few values: the last 1,024
    distinct ones are remembered (a bounded cache, cleared when full)."""
    if value is None:
        return None
    known = _PROVIDER_STRINGS.get(value)
    if known is not None:
        return known
    clean = redact(value[:MAX_ID_CHARS].encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    if len(_PROVIDER_STRINGS) >= _PROVIDER_STRINGS_MAX:
        _PROVIDER_STRINGS.clear()
    if len(value) <= MAX_ID_CHARS:
        _PROVIDER_STRINGS[value] = clean
    return clean[:MAX_ID_CHARS]
