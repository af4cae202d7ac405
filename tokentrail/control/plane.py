"""The control plane of one process: registry and control state kept current from Kafka,
and the writes of the CLI (mint, revoke, freeze, limits, capture)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from schemas.models import Actor, ControlRecord, Identity, control_key
from schemas.signing import KeySet
from tokentrail.control.follower import Handler, TopicFollower
from tokentrail.control.publish import publish
from tokentrail.control.records import RecordError, decode_control, decode_identity, encode, mint_identity
from tokentrail.control.registry import UNLIMITED, ControlState, IdentityRegistry, RateLimits
from tokentrail.settings import CoreSettings
from tokentrail.topics import CONTROLS, IDENTITIES

log = logging.getLogger("tokentrail.control")

Refused = Callable[[str, str], None]
"""Told of every refused record: (topic kind `identities`/`controls`, RecordError.kind)."""


class ControlPlane:
    def __init__(
        self, settings: CoreSettings, default_limits: RateLimits = UNLIMITED, on_refused: Refused | None = None
    ) -> None:
        """Raises ConfigError without a usable TOKENTRAIL_OPERATOR_KEY (records are signed and verified with it)."""
        self.operator_keys = KeySet(*settings.operator_keys())
        self.kafka = settings.kafka_client_config()
        self.bootstrap = self.kafka["bootstrap.servers"]
        self.identities_topic = settings.topic(IDENTITIES)
        self.controls_topic = settings.topic(CONTROLS)
        self.identities = IdentityRegistry()
        self.controls = ControlState(default_limits)
        self.records: dict[str, ControlRecord] = {}
        """Every live control record by compaction key, budgets and SLOs included (`controls list`)."""
        self.refused: Counter[tuple[str, str]] = Counter()
        """Refused records by (topic kind, reason kind): a bounded set of pairs."""
        self._on_refused = on_refused
        handlers: dict[str, Handler] = {
            self.identities_topic: self._apply_identity,
            self.controls_topic: self._apply_control,
        }
        self.follower = TopicFollower(self.bootstrap, handlers, on_bad_record=self._refuse, kafka_config=self.kafka)

    def _apply_identity(self, key: bytes | None, value: bytes | None) -> None:
        self.identities.apply(*decode_identity(key, value, self.operator_keys))

    def _apply_control(self, key: bytes | None, value: bytes | None) -> None:
        name, record = decode_control(key, value, self.operator_keys)
        self.records[name] = record
        self.controls.apply(name, record)

    def _refuse(self, topic: str, exc: Exception) -> None:
        """Count a refused record; log the first of each kind only (a flood of forged records
        must not flood the log)."""
        which = "identities" if topic == self.identities_topic else "controls"
        reason = exc.kind if isinstance(exc, RecordError) else "schema"
        self.refused[(which, reason)] += 1
        if self.refused[(which, reason)] == 1:
            log.warning("refused a record on %s (%s; further ones are only counted): %s", topic, reason, exc)
        if self._on_refused is not None:
            self._on_refused(which, reason)

    def create_key(
        self,
        tenant_id: str,
        actor: Actor,
        parent_key_id: str | None = None,
        expires_at: datetime | None = None,
        models: list[str] | None = None,
    ) -> tuple[Identity, str]:
        """Mint and publish a key (reading the topics first); returns (identity, key). The key is
        shown once, never stored."""
        parent = None
        if parent_key_id is not None:
            self.follower.catch_up()
            entry = self.identities.get(parent_key_id)
            if entry is None:
                raise ValueError(f"parent key {parent_key_id} is not in the registry")
            parent = entry.identity
        return self.mint(tenant_id, actor, parent, expires_at, models)

    def mint(
        self,
        tenant_id: str,
        actor: Actor,
        parent: Identity | None,
        expires_at: datetime | None = None,
        models: list[str] | None = None,
    ) -> tuple[Identity, str]:
        """Mint and publish a key from what this process's registry already holds (the gateway's
        admin API: the follower thread owns the consumer, so no catch-up here)."""
        identity, key = mint_identity(tenant_id, actor, parent, datetime.now(UTC), expires_at, models)
        publish(self.kafka, self.identities_topic, identity.key_id, encode(identity, self.operator_keys))
        return identity, key

    def revoke_key(self, key_id: str) -> Identity:
        """Publish the key's record again with `revoked_at` (reading the topics first)."""
        self.follower.catch_up()
        entry = self.identities.get(key_id)
        if entry is None:
            raise ValueError(f"key {key_id} is not in the registry")
        return self.revoke(entry.identity)

    def revoke(self, identity: Identity) -> Identity:
        """Publish `identity` again with `revoked_at`; revoking twice keeps the first time. Every
        key delegated from it is refused with it (registry cascade)."""
        if identity.revoked_at is not None:
            return identity
        revoked = identity.model_copy(update={"revoked_at": datetime.now(UTC)})
        revoked = Identity.model_validate(revoked.model_dump())  # re-run the timestamp normalization
        publish(self.kafka, self.identities_topic, identity.key_id, encode(revoked, self.operator_keys))
        return revoked

    def resign_all(self) -> tuple[int, int]:
        """Publish every identity and control record again, signed with the current operator key
        (they verified with it or a previous one): after this, previous operator keys can be
        dropped. Returns (identities, control records) re-signed."""
        self.follower.catch_up()
        identities = self.identities.identities()
        for identity in identities:
            publish(self.kafka, self.identities_topic, identity.key_id, encode(identity, self.operator_keys))
        records = list(self.records.values())
        for record in records:
            self.put_control(record)
        return len(identities), len(records)

    def put_control(self, record: ControlRecord) -> None:
        """Publish a control record, signed with the operator key."""
        publish(self.kafka, self.controls_topic, control_key(record), encode(record, self.operator_keys))
