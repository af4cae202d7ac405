"""Parse, verify and validate one raw record (the hot path of the enrich flow).

`RecordReader.read(value, key)` turns the bytes of a `tokentrail.calls.raw` record into the
record's JSON form (a RawCall or GatewayEvent dict, exactly as `wire.to_dict(model)` gives
it) or a `Rejected` with a one-line reason. Order of checks: JSON, then signature (a forged
record is reported as forged whatever else is wrong with it), then schema. Knows nothing of
Kafka or Bytewax.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from flows.schema_check import compile_model_check
from schemas import wire
from schemas.models import RawCall
from schemas.signing import KeySet

_is_canonical_call = compile_model_check(RawCall.model_json_schema())


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the flow cannot accept; goes to the dead-letter topic with its reason."""

    reason: str
    original: bytes | None
    key: bytes | None


class RecordReader:
    """Verifies records signed with the gateways' signing keys (a key set: current and previous,
    so a rotation loses nothing); see the module docstring."""

    def __init__(self, signing_keys: KeySet | bytes) -> None:
        self._keys = signing_keys if isinstance(signing_keys, KeySet) else KeySet(signing_keys)

    def read(self, value: bytes | None, key: bytes | None = None) -> dict[str, Any] | Rejected:
        if not value:
            return Rejected("empty record", value, key)
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return Rejected(f"invalid JSON: {exc}", value, key)
        if type(record) is not dict:
            return Rejected(f"schema: record must be a JSON object, got {type(record).__name__}", value, key)
        problem = self._signature_problem(record)
        if problem:
            return Rejected(f"signature: {problem}", value, key)
        if record.get("kind") == "call" and _is_canonical_call(record):
            return record
        try:
            model = wire.RAW_RECORD.validate_python(record)
        except ValidationError as exc:
            return Rejected(f"schema: {wire.describe(exc)}", value, key)
        return wire.to_dict(model)

    def _signature_problem(self, record: dict[str, Any]) -> str | None:
        return self._keys.problem(record)


DEAD_LETTER_MAX_BYTES = 512 * 1024
"""A dead letter never exceeds this, whatever the original: half of Kafka's default message size
(1 MB), so re-escaping (a byte can take 6 in JSON, base64 takes 4 for 3) cannot make it one
the broker refuses, which would stop the flow on every restart (docs/flows.md, "Dead letters")."""
MAX_REASON_CHARS = 1024


def dead_letter(
    rejected: Rejected, source: str, partition: int | None, offset: int | None, max_bytes: int = DEAD_LETTER_MAX_BYTES
) -> bytes:
    """The dead-letter record: the reason, where the record came from, its size and SHA-256, and
    its bytes (as a UTF-8 string when they decode, else base64, named by `encoding`), cut to a
    prefix when the letter would exceed `max_bytes` (`truncated: true`; the hash and the
    topic/partition/offset still name the whole original)."""
    original = rejected.original or b""
    letter = {
        "reason": rejected.reason[:MAX_REASON_CHARS],
        "topic": source,
        "partition": partition,
        "offset": offset,
        "original_bytes": len(original),
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "truncated": False,
    }
    kept = original
    while True:
        encoded = orjson.dumps({**letter, **_original_text(kept, cut=kept is not original)})
        if len(encoded) <= max_bytes or not kept:
            return encoded
        letter["truncated"] = True
        kept = kept[: int(len(kept) * (max_bytes - 1024) / len(encoded))]


def _original_text(original: bytes, cut: bool) -> dict[str, str]:
    try:
        return {"encoding": "utf-8", "original": original.decode("utf-8")}
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(original) - 3:  # a character cut at the end of the prefix
            return {"encoding": "utf-8", "original": original[: exc.start].decode("utf-8")}
        return {"encoding": "base64", "original": base64.b64encode(original).decode("ascii")}


def dead_letter_headers(
    headers: list[tuple[str, bytes]] | None, reason: str, max_bytes: int = 16 * 1024
) -> list[tuple[str, bytes]]:
    """The original's Kafka headers (as many as fit in `max_bytes`) and `tokentrail-reason`."""
    kept: list[tuple[str, bytes]] = []
    room = max_bytes
    for name, value in headers or []:
        room -= len(name) + len(value or b"")
        if room < 0:
            break
        kept.append((name, value))
    return [*kept, ("tokentrail-reason", reason[:512].encode())]
