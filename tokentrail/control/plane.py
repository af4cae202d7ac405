"""The control plane of one process: registry and control state kept current from Kafka,
and the writes of the CLI (mint, revoke, freeze, limits, capture)."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import wire
from schemas.models import Actor, ControlRecord, Identity, control_key
from tokentrail.control.follower import Handler, TopicFollower
from tokentrail.control.publish import publish
from tokentrail.control.records import decode_control, decode_identity, mint_identity
from tokentrail.control.registry import UNLIMITED, ControlState, IdentityRegistry, RateLimits
from tokentrail.settings import CoreSettings
from tokentrail.topics import CONTROLS, IDENTITIES


class ControlPlane:
    def __init__(self, settings: CoreSettings, default_limits: RateLimits = UNLIMITED) -> None:
        self.bootstrap = settings.bootstrap()
        self.identities_topic = settings.topic(IDENTITIES)
        self.controls_topic = settings.topic(CONTROLS)
        self.identities = IdentityRegistry()
        self.controls = ControlState(default_limits)
        handlers: dict[str, Handler] = {
            self.identities_topic: self._apply_identity,
            self.controls_topic: self._apply_control,
        }
        self.follower = TopicFollower(self.bootstrap, handlers)

    def _apply_identity(self, key: bytes | None, value: bytes | None) -> None:
        self.identities.apply(*decode_identity(key, value))

    def _apply_control(self, key: bytes | None, value: bytes | None) -> None:
        self.controls.apply(*decode_control(key, value))

    def create_key(
        self, tenant_id: str, actor: Actor, parent_key_id: str | None = None, now: datetime | None = None
    ) -> tuple[Identity, str]:
        """Mint and publish a key; returns (identity, key). The key is shown once, never stored."""
        parent = None
        if parent_key_id is not None:
            self.follower.catch_up()
            entry = self.identities.get(parent_key_id)
            if entry is None:
                raise ValueError(f"parent key {parent_key_id} is not in the registry")
            parent = entry.identity
        identity, key = mint_identity(tenant_id, actor, parent, now or datetime.now(UTC))
        publish(self.bootstrap, self.identities_topic, identity.key_id, wire.dumps(identity))
        return identity, key

    def revoke_key(self, key_id: str, now: datetime | None = None) -> Identity:
        """Publish the key's record again with `revoked_at`; revoking twice keeps the first time."""
        self.follower.catch_up()
        entry = self.identities.get(key_id)
        if entry is None:
            raise ValueError(f"key {key_id} is not in the registry")
        if entry.revoked:
            return entry.identity
        revoked = entry.identity.model_copy(update={"revoked_at": now or datetime.now(UTC)})
        revoked = Identity.model_validate(revoked.model_dump())  # re-run the timestamp normalization
        publish(self.bootstrap, self.identities_topic, key_id, wire.dumps(revoked))
        return revoked

    def put_control(self, record: ControlRecord) -> None:
        publish(self.bootstrap, self.controls_topic, control_key(record), wire.dumps(record))
