"""Parse, verify and validate one raw record (the hot path of the enrich flow).

`RecordReader.read(value, key)` turns the bytes of a `tokentrail.calls.raw` record into the
record's JSON form (a RawCall or GatewayEvent dict, exactly as `wire.to_dict(model)` gives
it) or a `Rejected` with a one-line reason. Order of checks: JSON, then signature (a forged
record is reported as forged whatever else is wrong with it), then schema. Knows nothing of
Kafka or Bytewax.
"""

from __future__ import annotations

import base64
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


def dead_letter(rejected: Rejected, source: str, partition: int | None, offset: int | None) -> bytes:
    """The dead-letter record: the reason, where the record came from, and its exact bytes
    (as a UTF-8 string when they decode, else base64, named by `encoding`)."""
    original = rejected.original or b""
    try:
        text, encoding = original.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(original).decode("ascii"), "base64"
    return orjson.dumps(
        {
            "reason": rejected.reason,
            "topic": source,
            "partition": partition,
            "offset": offset,
            "encoding": encoding,
            "original": text,
        }
    )
