"""Tamper evidence for gateway records (docs/architecture.md, invariant 7).

The signature of a record is the lowercase hex HMAC-SHA256, keyed with
`TOKENTRAIL_SIGNING_KEY` (UTF-8 bytes), of its *canonical form*: the record as a JSON
object without its `signature` field, keys sorted at every depth, no whitespace, UTF-8
(not `\\u` escaped) — exactly `orjson.dumps(record, option=orjson.OPT_SORT_KEYS)`.
In another language: parse, drop `signature`, re-serialize that way, HMAC, hex.
Verification recomputes it from the received JSON and compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from tokentrail.errors import TokentrailError

SIGNATURE_FIELD = "signature"


class InvalidSignature(TokentrailError, ValueError):
    """The record's signature is missing or does not match its content."""


def canonical_bytes(record: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the record minus `signature`, keys sorted, compact."""
    unsigned = {k: v for k, v in record.items() if k != SIGNATURE_FIELD}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def sign(record: dict[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 of the record's canonical form; store it in `record["signature"]`."""
    return hmac.new(key, canonical_bytes(record), hashlib.sha256).hexdigest()


def verify(record: dict[str, Any], key: bytes) -> None:
    """Raise InvalidSignature unless `record["signature"]` matches its content."""
    claimed = record.get(SIGNATURE_FIELD)
    if not isinstance(claimed, str) or not claimed:
        raise InvalidSignature("record has no signature")
    if not hmac.compare_digest(claimed, sign(record, key)):
        raise InvalidSignature("signature does not match the record (forged or altered)")
