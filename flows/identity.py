"""Who owns a call: the identity registry's view per key id, and attribution of calls.

Identities arrive on the compacted `tokentrail.identities` topic (key = key id, value = an
`Identity`, or a tombstone when a key is deleted). `IdentityTable` keeps one compact entry per
key; `attribute` gives every call an owner (docs/architecture.md, invariant 1) and keeps its whole delegation chain
(docs/architecture.md, invariant 2). A call whose key the table does not know (yet, or any more) is never dropped:
it is attributed from what the gateway recorded in the signed RawCall, flagged
`identity_known=False`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from schemas.models import Identity
from schemas.signing import KeySet
from tokentrail.control import records

Link = tuple[str, str, str]
"""One chain hop: (key_id, actor_type, actor_id)."""


class IdentityEntry(NamedTuple):
    """What the flow needs of an Identity: its tenant and its chain, root first, key last."""

    tenant_id: str
    chain: tuple[Link, ...]
    revoked: bool = False

    @classmethod
    def from_identity(cls, identity: Identity) -> IdentityEntry:
        chain = tuple((link.key_id, link.actor.type, link.actor.id) for link in identity.chain())
        return cls(identity.tenant_id, chain, identity.revoked_at is not None)


def decode_identity(key: bytes | None, value: bytes | None, operator_keys: KeySet) -> tuple[str, IdentityEntry | None]:
    """A record of the identities topic as (key_id, entry); a tombstone gives (key_id, None).
    Raises `RecordError` naming the problem, a missing or wrong operator signature included
    (the control plane's decoder, so the gateway and the flows accept exactly the same records)."""
    key_id, identity = records.decode_identity(key, value, operator_keys)
    return key_id, None if identity is None else IdentityEntry.from_identity(identity)


class IdentityTable:
    """The latest entry per key id (what a compacted topic converges to)."""

    def __init__(self, entries: dict[str, IdentityEntry] | None = None) -> None:
        self.entries: dict[str, IdentityEntry] = dict(entries or {})

    def apply(self, key_id: str, entry: IdentityEntry | None) -> None:
        if entry is None:
            self.entries.pop(key_id, None)
        else:
            self.entries[key_id] = entry

    def get(self, key_id: str) -> IdentityEntry | None:
        return self.entries.get(key_id)

    def __len__(self) -> int:
        return len(self.entries)


class Attribution(NamedTuple):
    """The owner of a call: the caller (last link) and the whole chain, root first."""

    tenant_id: str
    key_id: str
    chain: tuple[Link, ...]
    identity_known: bool

    @property
    def caller(self) -> Link:
        return self.chain[-1]

    @property
    def root(self) -> Link:
        return self.chain[0]


def attribute(call: dict[str, Any], identity: IdentityEntry | None) -> Attribution:
    """Attribute a call (RawCall JSON form) given its key's registry entry, if known.

    The registry is authoritative when it knows the key; otherwise the chain the gateway
    recorded at request time (signed, so trustworthy) is used, and the row says so.
    """
    key_id = call["key_id"]
    if identity is not None:
        return Attribution(identity.tenant_id, key_id, identity.chain, True)
    chain = tuple((link["key_id"], link["actor"]["type"], link["actor"]["id"]) for link in call["chain"])
    return Attribution(call["tenant_id"], key_id, chain, False)
