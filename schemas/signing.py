"""Tamper evidence for gateway records (docs/architecture.md, invariant 7).

The signature of a record is the lowercase hex HMAC-SHA256, keyed with
`TOKENTRAIL_SIGNING_KEY` (UTF-8 bytes), of its *canonical form*: the record as a JSON
object without its `signature` field, keys sorted at every depth, no whitespace, UTF-8
(not `\\u` escaped) — exactly `orjson.dumps(record, option=orjson.OPT_SORT_KEYS)`.
In another language: parse, drop `signature`, re-serialize that way, HMAC, hex.
Verification recomputes it from the received JSON and compares in constant time.

Key ids and rotation: a `KeySet` signs with its current key and writes the signature as
`<key id>:<hex>`, where the key id is the first 8 hex digits of SHA-256 over
`tokentrail-key-id:` + the key (it names the key and reveals nothing usable about it). It
verifies with whichever of its keys (current and previous) the id names; a bare hex signature
(no id, written before key ids) is tried against every key of the set. So a key is rotated by
adding the new one to every verifier first, then switching the signers (docs/gateway.md).

The same scheme signs two kinds of records with two distinct keys: RawCalls and gateway
events with `TOKENTRAIL_SIGNING_KEY`; identity and control records with `TOKENTRAIL_OPERATOR_KEY`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

import orjson

from tokentrail.errors import TokentrailError

SIGNATURE_FIELD = "signature"
KEY_ID_LENGTH = 8


class InvalidSignature(TokentrailError, ValueError):
    """The record's signature is missing or does not match its content."""


def canonical_bytes(record: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the record minus `signature`, keys sorted, compact."""
    unsigned = {k: v for k, v in record.items() if k != SIGNATURE_FIELD}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def sign(record: dict[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 of the record's canonical form; store it in `record["signature"]`."""
    return hmac.new(key, canonical_bytes(record), hashlib.sha256).hexdigest()


def verify(record: dict[str, Any], keys: bytes | KeySet) -> None:
    """Raise InvalidSignature unless `record["signature"]` matches its content under one of `keys`."""
    (keys if isinstance(keys, KeySet) else KeySet(keys)).verify(record)


def key_id(key: bytes) -> str:
    """The public name of a key, written in front of its signatures."""
    return hashlib.sha256(b"tokentrail-key-id:" + key).hexdigest()[:KEY_ID_LENGTH]


class KeySet:
    """The key that signs (`current`) and the keys that verify (current and `previous`), by key id."""

    def __init__(self, current: bytes, previous: Iterable[bytes] = ()) -> None:
        self.current = current
        self.current_id = key_id(current)
        self._by_id = {key_id(key): key for key in previous}
        self._by_id[self.current_id] = current

    @property
    def key_ids(self) -> list[str]:
        return list(self._by_id)

    def sign(self, record: dict[str, Any]) -> str:
        """`<key id>:<hex HMAC>` of the record's canonical form with the current key."""
        return f"{self.current_id}:{sign(record, self.current)}"

    def verify(self, record: dict[str, Any]) -> None:
        """Raise InvalidSignature unless the record's signature is good."""
        problem = self.problem(record)
        if problem is not None:
            raise InvalidSignature(problem)

    def problem(self, record: dict[str, Any]) -> str | None:
        """None if the record's signature is good, else why not. Takes `signature` out of the
        record while it hashes and puts it back (no copy: this runs per record in the flows)."""
        claimed = record.pop(SIGNATURE_FIELD, None)
        try:
            if not isinstance(claimed, str) or not claimed:
                return "record has no signature"
            named, separator, digest = claimed.rpartition(":")
            if separator:
                key = self._by_id.get(named)
                if key is None:
                    return f"signed with key {named[:KEY_ID_LENGTH]!r}, which is not among the keys accepted here"
                candidates: Iterable[bytes] = (key,)
            else:
                candidates = self._by_id.values()
            canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
            presented = digest.encode("utf-8", "replace")
            for key in candidates:
                if hmac.compare_digest(presented, hmac.new(key, canonical, hashlib.sha256).hexdigest().encode()):
                    return None
            return "signature does not match the record (forged or altered)"
        finally:
            if claimed is not None:
                record[SIGNATURE_FIELD] = claimed
