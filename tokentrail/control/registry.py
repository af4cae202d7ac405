"""In-memory views of the compacted topics, read on every request by the gateway.

`IdentityRegistry` holds one entry per key id (from `tokentrail.identities`), with its chain
already in wire form so the gateway never builds it per request. `ControlState` holds the
live control records (from `tokentrail.controls`) by their compaction key. Both are updated
by one follower thread and read by the event loop: every update replaces a whole dict entry,
which is atomic in CPython, so readers need no lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from schemas.models import Budget, Capture, Freeze, Identity, Limits, Slo
from tokentrail.control import keys

AuthFailure = Literal["missing", "malformed", "unknown", "revoked", "mismatch", "expired"]
"""Why a presented key is refused. `revoked` also covers a key whose ancestor is revoked or gone:
a delegated key never outlives the key it acts for."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What the gateway needs of an Identity, precomputed once per record."""

    key_id: str
    key_hash: str
    tenant_id: str
    actor: dict[str, str]
    chain: list[dict[str, Any]]
    """Root first, this key last, as RawCall.chain wants it on the wire."""
    ancestors: tuple[str, ...]
    """Key ids this key was delegated from, root first: revoking or freezing any of them cuts this one."""
    revoked: bool
    expires_at: float | None
    """Epoch seconds after which the key is refused."""
    models: frozenset[str] | None
    """The models the key may call; None means any."""
    identity: Identity

    @classmethod
    def from_identity(cls, identity: Identity) -> KeyEntry:
        return cls(
            key_id=identity.key_id,
            key_hash=identity.key_hash,
            tenant_id=identity.tenant_id,
            actor=identity.actor.model_dump(),
            chain=[link.model_dump() for link in identity.chain()],
            ancestors=tuple(link.key_id for link in identity.ancestors),
            revoked=identity.revoked_at is not None,
            expires_at=identity.expires_at.timestamp() if identity.expires_at else None,
            models=frozenset(identity.models) if identity.models is not None else None,
            identity=identity,
        )


class IdentityRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, KeyEntry] = {}

    def apply(self, key_id: str, identity: Identity | None) -> None:
        """One record of the identities topic; None is a tombstone (key deleted)."""
        if identity is None:
            self._entries.pop(key_id, None)
        else:
            self._entries[key_id] = KeyEntry.from_identity(identity)

    def get(self, key_id: str) -> KeyEntry | None:
        return self._entries.get(key_id)

    def authenticate(self, presented: str | None) -> KeyEntry | AuthFailure:
        """The live entry a presented key belongs to, or why it is refused."""
        if not presented:
            return "missing"
        key_id = keys.key_id_of(presented)
        if key_id is None:
            return "malformed"
        entry = self._entries.get(key_id)
        if entry is None:
            return "unknown"
        if not keys.matches(presented, entry.key_hash):
            return "mismatch"
        if entry.revoked or not self.lineage_live(entry):
            return "revoked"
        if entry.expires_at is not None and time.time() >= entry.expires_at:
            return "expired"
        return entry

    def lineage_live(self, entry: KeyEntry) -> bool:
        """Whether every key this one was delegated from is still in the registry and not revoked."""
        for ancestor_id in entry.ancestors:
            ancestor = self._entries.get(ancestor_id)
            if ancestor is None or ancestor.revoked:
                return False
        return True

    def still_admitted(self, entry: KeyEntry) -> bool:
        """Whether a key admitted earlier (a running stream's) is still live: not revoked, not
        deleted, and neither is any of its ancestors."""
        current = self._entries.get(entry.key_id)
        return current is not None and not current.revoked and self.lineage_live(current)

    def identities(self) -> list[Identity]:
        return [entry.identity for entry in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-minute limits of one identity; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None


UNLIMITED = RateLimits()


class ControlState:
    """Live freezes, limits, capture switches, SLOs and budgets, by the control record's compaction key.

    The gateway enforces the first three; SLOs and budgets are kept for the flows that follow
    them (detection) and for `tokentrail slo list` / `tokentrail budget list`.
    """

    def __init__(self, default_limits: RateLimits = UNLIMITED) -> None:
        self.default_limits = default_limits
        self._freezes: dict[str, Freeze] = {}
        self._limits: dict[str, RateLimits] = {}
        self._capture: dict[str, bool] = {}
        self._slos: dict[str, Slo] = {}
        self._budgets: dict[str, Budget] = {}

    def apply(self, key: str, record: Any | None) -> None:
        """One record of the controls topic (key = `kind:scope`); None is a tombstone."""
        kind, _, scope = key.partition(":")
        if kind == "freeze":
            self._set(self._freezes, scope, record if isinstance(record, Freeze) and record.frozen else None)
        elif kind == "limits":
            # A Limits record without either limit removes the scope's own limits (`limits --off`):
            # the key falls back to its tenant's, then to the gateway default.
            limits = None
            if isinstance(record, Limits) and (record.requests_per_minute or record.tokens_per_minute):
                limits = RateLimits(record.requests_per_minute, record.tokens_per_minute)
            self._set(self._limits, scope, limits)
        elif kind == "capture":
            self._set(self._capture, scope, bool(isinstance(record, Capture) and record.enabled) or None)
        elif kind == "slo":
            self._set(self._slos, scope, record if isinstance(record, Slo) else None)
        elif kind == "budget":
            self._set(self._budgets, scope, record if isinstance(record, Budget) else None)

    def freeze_of(self, tenant_id: str, key_id: str, ancestors: tuple[str, ...] = ()) -> Freeze | None:
        """The freeze that stops this key: the key's own first, then one of a key it was
        delegated from (`ancestors`, nearest first), else its tenant's."""
        freezes = self._freezes
        if not freezes:
            return None
        freeze = freezes.get(f"key:{key_id}")
        if freeze is None:
            for ancestor_id in reversed(ancestors):
                freeze = freezes.get(f"key:{ancestor_id}")
                if freeze is not None:
                    return freeze
            freeze = freezes.get(f"tenant:{tenant_id}")
        return freeze

    def limits_of(self, tenant_id: str, key_id: str) -> RateLimits:
        """Limits of one identity: its key's record, else its tenant's, else the gateway default.

        A tenant-scope record sets the limit of each identity of the tenant (not a shared pool).
        """
        return self._limits.get(f"key:{key_id}") or self._limits.get(f"tenant:{tenant_id}") or self.default_limits

    def capture_enabled(self, tenant_id: str) -> bool:
        return f"tenant:{tenant_id}" in self._capture

    def slo_of(self, tenant_id: str) -> Slo | None:
        """The tenant's availability objective, None when it set none (detection then uses its default)."""
        return self._slos.get(f"tenant:{tenant_id}")

    def slos(self) -> list[Slo]:
        return list(self._slos.values())

    def budgets_of(self, tenant_id: str, key_id: str | None = None) -> list[Budget]:
        """The budgets a call of this tenant (and key) spends from: the tenant's, then the key's."""
        found = [self._budgets.get(f"tenant:{tenant_id}")]
        if key_id is not None:
            found.append(self._budgets.get(f"key:{key_id}"))
        return [budget for budget in found if budget is not None]

    def budgets(self) -> list[Budget]:
        return list(self._budgets.values())

    @staticmethod
    def _set(table: dict[str, Any], scope: str, value: Any | None) -> None:
        if value is None:
            table.pop(scope, None)
        else:
            table[scope] = value
