"""What detection writes: UnifiedEvents (`alert_fired`, `alert_resolved`, `pattern_detected`)
for `tokentrail.events`, and Alert records for `tokentrail.alerts` (keyed by fingerprint).

Event ids are deterministic UUIDv7s (time from the event, the rest from a hash of what it
records), so a replayed detection makes the same event and `events` storage drops the repeat.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from detection.lifecycle import Change
from schemas.models import Alert, FailurePattern, format_timestamp

_EVENT_SEVERITY = {"page": "ERROR", "ticket": "WARN", "info": "INFO"}
DETECTOR_ACTOR = {"type": "system", "id": "detect"}


def stable_uuid7(at_ms: int, name: str) -> str:
    """A UUIDv7 whose time is `at_ms` and whose random bits are a hash of `name`."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:10], "big")
    rand_a = digest >> 68 & 0xFFF
    rand_b = digest & ((1 << 62) - 1)
    value = (at_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def alert_record(alert: Alert) -> bytes:
    """The `tokentrail.alerts` value (JSON)."""
    return alert.model_dump_json().encode()


def alert_event(change: Change) -> dict[str, Any] | None:
    """The UnifiedEvent of a state change a human is told about (None for quiet updates)."""
    if not change.notifies:
        return None
    alert = change.alert
    when = alert.updated_at or alert.starts_at
    kind = "alert_fired" if change.kind == "fired" else "alert_resolved"
    actor = alert.actor.model_dump() if alert.actor else DETECTOR_ACTOR
    return {
        "event_id": stable_uuid7(int(when.timestamp() * 1000), f"{kind}/{alert.fingerprint}/{alert.revision}"),
        "event_type": kind,
        "event_source": "flows",
        "tenant_id": alert.tenant_id,
        "timestamp": format_timestamp(when),
        "severity": _EVENT_SEVERITY[alert.severity] if kind == "alert_fired" else "INFO",
        "actor": actor,
        "context": {"request_id": None, "trace_id": None},
        "payload": alert.model_dump(mode="json"),
    }


def pattern_version(pattern: FailurePattern) -> str:
    """One publication of a pattern: when, and how many identities and tenants it names then.
    The counts matter: a pattern that grows twice at one instant of event time (two joins in
    one batch) is published twice, and the flows sink keeps the first row of an id, so an id
    of the instant alone kept the smaller version in `events` and `failure_patterns`."""
    identity_count, tenant_count = pattern.breadth()
    return f"{pattern.pattern_id}/{pattern.detected_at.isoformat()}/{identity_count}/{tenant_count}"


def pattern_event(pattern: FailurePattern) -> dict[str, Any]:
    at = pattern.detected_at
    return {
        "event_id": stable_uuid7(int(at.timestamp() * 1000), f"pattern_detected/{pattern_version(pattern)}"),
        "event_type": "pattern_detected",
        "event_source": "flows",
        "tenant_id": pattern.tenant_id,
        "timestamp": format_timestamp(at),
        "severity": "ERROR" if pattern.scope == "provider" else "WARN",
        "actor": DETECTOR_ACTOR,
        "context": {"request_id": None, "trace_id": None},
        "payload": pattern.model_dump(mode="json"),
    }
