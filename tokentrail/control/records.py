"""Records of the compacted topics: decode (with a one-line reason on bad input) and encode.

Identity and control records carry an operator signature (`schemas.signing`, the operator
key set): a record without one, or with a wrong one, is refused like a malformed one, so
whoever can write to Kafka cannot mint a key, lift a freeze or turn capture on. A tombstone
cannot be signed: on the identities topic it deletes a key (which can only deny: its
delegates are cut with it); on the controls topic it is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import wire
from schemas.models import Actor, ControlRecord, Identity, control_key
from schemas.signing import SIGNATURE_FIELD, KeySet
from tokentrail.control import keys
from tokentrail.errors import TokentrailError


class RecordError(TokentrailError, ValueError):
    """A record on a control topic that is not what the topic carries; the message says why,
    `kind` is a bounded label for counting (`key`, `json`, `signature`, `schema`, `tombstone`)."""

    def __init__(self, message: str, kind: str = "schema") -> None:
        super().__init__(message)
        self.kind = kind


def encode(record: Identity | ControlRecord, operator_keys: KeySet) -> bytes:
    """The record signed with the operator key, as it goes on its topic."""
    data = wire.to_dict(record)
    data.pop(SIGNATURE_FIELD, None)
    data[SIGNATURE_FIELD] = operator_keys.sign(data)
    return orjson.dumps(data)


def created_key_json(identity: Identity, key: str) -> dict[str, Any]:
    """What `keys create --json` prints and `POST /tokentrail/v1/keys` answers: the key (shown
    once) and its identity, never its hash."""
    return {
        "key": key,
        "key_id": identity.key_id,
        "tenant_id": identity.tenant_id,
        "actor": identity.actor.model_dump(),
        "parent_key_id": identity.parent_key_id,
        "chain": [link.model_dump() for link in identity.chain()],
        "expires_at": wire.to_dict(identity)["expires_at"],
        "models": identity.models,
    }


def public_json(identity: Identity) -> dict[str, Any]:
    """An identity as listed to users (`keys list --json`, `GET /tokentrail/v1/keys`): no hash, no signature."""
    record = wire.to_dict(identity)
    del record["key_hash"], record["signature"]
    return record


def _verified(data: Any, operator_keys: KeySet, what: str) -> Any:
    if not isinstance(data, dict):
        raise RecordError(f"{what}: record must be a JSON object", "schema")
    problem = operator_keys.problem(data)
    if problem is not None:
        raise RecordError(f"{what}: operator signature: {problem}", "signature")
    return data


def decode_identity(key: bytes | None, value: bytes | None, operator_keys: KeySet) -> tuple[str, Identity | None]:
    """(key_id, Identity), or (key_id, None) for a tombstone."""
    if not key:
        raise RecordError("identity record without a key", "key")
    key_id = key.decode("utf-8", "replace")
    if value is None:
        return key_id, None
    try:
        data = _verified(wire.decode_json(value), operator_keys, f"identity {key_id}")
        identity = wire.validate(Identity, data)
    except wire.SchemaError as exc:
        raise RecordError(f"identity {key_id}: {exc}", "json" if "not valid JSON" in str(exc) else "schema") from None
    if identity.key_id != key_id:
        raise RecordError(f"identity record key {key_id!r} does not match its key_id {identity.key_id!r}", "key")
    return key_id, identity


def decode_control(key: bytes | None, value: bytes | None, operator_keys: KeySet) -> tuple[str, ControlRecord]:
    """(compaction key, record). A tombstone is refused: it cannot carry a signature, and
    removing a control record lifts it (a freeze off is a signed `frozen: false` record)."""
    if not key:
        raise RecordError("control record without a key", "key")
    name = key.decode("utf-8", "replace")
    if value is None:
        raise RecordError(f"control {name}: a tombstone cannot be signed; publish a record that lifts it", "tombstone")
    try:
        data = _verified(wire.decode_json(value), operator_keys, f"control {name}")
        record = wire.validate_adapter(wire.CONTROL_RECORD, data, "ControlRecord")
    except wire.SchemaError as exc:
        raise RecordError(f"control {name}: {exc}", "json" if "not valid JSON" in str(exc) else "schema") from None
    if control_key(record) != name:
        raise RecordError(
            f"control record key {name!r} does not match its kind and scope {control_key(record)!r}", "key"
        )
    return name, record


def mint_identity(
    tenant_id: str,
    actor: Actor,
    parent: Identity | None,
    now: datetime,
    expires_at: datetime | None = None,
    models: list[str] | None = None,
) -> tuple[Identity, str]:
    """A new key and its Identity. A delegated key inherits its parent's chain and tenant, and
    is never wider than its parent: it expires no later (its parent's expiry when none is
    given) and may call no model its parent may not (its parent's list when none is given).

    Raises ValueError (one line) when the parent cannot delegate or the fields are invalid.
    """
    if expires_at is not None and expires_at <= now:
        raise ValueError("expires_at must be in the future")
    if parent is not None:
        if parent.revoked_at is not None:
            raise ValueError(f"parent key {parent.key_id} is revoked")
        if parent.tenant_id != tenant_id:
            raise ValueError(f"parent key {parent.key_id} belongs to tenant {parent.tenant_id!r}, not {tenant_id!r}")
        if parent.expires_at is not None:
            if parent.expires_at <= now:
                raise ValueError(f"parent key {parent.key_id} has expired")
            if expires_at is not None and expires_at > parent.expires_at:
                raise ValueError(
                    f"a delegated key cannot outlive its parent, which expires at {parent.expires_at.isoformat()}"
                )
            expires_at = expires_at or parent.expires_at
        if parent.models is not None:
            wider = sorted(set(models or []) - set(parent.models))
            if wider:
                raise ValueError(f"the parent key may not call {', '.join(wider)}, so its delegate may not either")
            models = models if models is not None else parent.models
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
            expires_at=expires_at,
            models=models,
        )
    except ValidationError as exc:
        raise ValueError(wire.describe(exc)) from None
    return identity, key
