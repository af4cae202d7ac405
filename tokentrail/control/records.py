"""Records of the compacted topics: decode (with a one-line reason on bad input) and encode."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from schemas import wire
from schemas.models import Actor, ControlRecord, Identity, control_key
from tokentrail.control import keys
from tokentrail.errors import TokentrailError


class RecordError(TokentrailError, ValueError):
    """A record on a control topic that is not what the topic carries; the message says why."""


def decode_identity(key: bytes | None, value: bytes | None) -> tuple[str, Identity | None]:
    """(key_id, Identity), or (key_id, None) for a tombstone."""
    if not key:
        raise RecordError("identity record without a key")
    key_id = key.decode("utf-8", "replace")
    if value is None:
        return key_id, None
    try:
        identity = wire.loads(Identity, value)
    except wire.SchemaError as exc:
        raise RecordError(f"identity {key_id}: {exc}") from None
    if identity.key_id != key_id:
        raise RecordError(f"identity record key {key_id!r} does not match its key_id {identity.key_id!r}")
    return key_id, identity


def decode_control(key: bytes | None, value: bytes | None) -> tuple[str, ControlRecord | None]:
    """(compaction key, record), or (key, None) for a tombstone."""
    if not key:
        raise RecordError("control record without a key")
    name = key.decode("utf-8", "replace")
    if value is None:
        return name, None
    try:
        record = wire.validate_adapter(wire.CONTROL_RECORD, wire.decode_json(value), "ControlRecord")
    except wire.SchemaError as exc:
        raise RecordError(f"control {name}: {exc}") from None
    if control_key(record) != name:
        raise RecordError(f"control record key {name!r} does not match its kind and scope {control_key(record)!r}")
    return name, record


def mint_identity(tenant_id: str, actor: Actor, parent: Identity | None, now: datetime) -> tuple[Identity, str]:
    """A new key and its Identity. A delegated key inherits its parent's chain and tenant.

    Raises ValueError (one line) when the parent cannot delegate or the fields are invalid.
    """
    if parent is not None:
        if parent.revoked_at is not None:
            raise ValueError(f"parent key {parent.key_id} is revoked")
        if parent.tenant_id != tenant_id:
            raise ValueError(f"parent key {parent.key_id} belongs to tenant {parent.tenant_id!r}, not {tenant_id!r}")
    key_id, key = keys.new_key()
    try:
        identity = Identity(
            key_id=key_id,
            key_hash=keys.hash_key(key),
            tenant_id=tenant_id,
            actor=actor,
            parent_key_id=parent.key_id if parent else None,
            ancestors=parent.chain() if parent else [],
            created_at=now,
        )
    except ValidationError as exc:
        raise ValueError(wire.describe(exc)) from None
    return identity, key
