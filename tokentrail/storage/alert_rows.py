"""Rows of the ClickHouse `alerts` and `failure_patterns` tables (clickhouse/0009, 0010).

Pure mappings with the storage contract's keys; timestamps as RFC 3339 strings, which the
inserts accept (docs/storage.md). The mapping is deterministic (no clock, no random id): a
re-published or replayed state makes the same row, with the same id (`alert_id`,
`detection_id`) for the flows sink's dedup, and the same sorting key for ReplacingMergeTree.
"""

from __future__ import annotations

from typing import Any

from schemas.models import Actor, Alert, FailurePattern, format_timestamp


def _actor(actor: Actor | None) -> str:
    return f"{actor.type}:{actor.id}" if actor else ""


def alert_row(alert: Alert) -> dict[str, Any]:
    """The `alerts` row of one alert state (the replacing version is its `revision`); `alert_id`
    names the state: fingerprint, start, status and revision."""
    starts_at = format_timestamp(alert.starts_at)
    return {
        "alert_id": f"{alert.fingerprint}/{starts_at}/{alert.status}/{alert.revision}",
        "fingerprint": alert.fingerprint,
        "status": alert.status,
        "rule": alert.rule,
        "severity": alert.severity,
        "tenant_id": alert.tenant_id,
        "scope": alert.scope,
        "key_id": alert.key_id or "",
        "actor": _actor(alert.actor),
        "root_actor": _actor(alert.root_actor),
        "summary": alert.summary,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "value": alert.value,
        "threshold": alert.threshold,
        "starts_at": starts_at,
        "ends_at": format_timestamp(alert.ends_at) if alert.ends_at else None,
        "updated_at": format_timestamp(alert.updated_at or alert.ends_at or alert.starts_at),
        "revision": alert.revision,
        "evidence_sql": alert.evidence_sql or "",
        "evidence_url": alert.evidence_url or "",
    }


def pattern_row(pattern: FailurePattern) -> dict[str, Any]:
    """The `failure_patterns` row of a detected pattern (the replacing version is `detected_at`);
    `detection_id` names this publication: pattern, signature, when and how many it names (two
    growths at one instant are two rows for the sink's dedup; the later inserted one wins)."""
    detected_at = format_timestamp(pattern.detected_at)
    identity_count, tenant_count = pattern.breadth()
    return {
        "detection_id": f"{pattern.pattern_id}/{pattern.signature}/{detected_at}/{identity_count}/{tenant_count}",
        "tenant_id": pattern.tenant_id,
        "pattern_id": pattern.pattern_id,
        "scope": pattern.scope,
        "signature": pattern.signature,
        "provider": pattern.provider,
        "model": pattern.model,
        "status": pattern.status,
        "error_type": pattern.error_type,
        "error_code": pattern.error_code,
        "context_hash": pattern.context_hash,
        "identities": sorted(set(pattern.identities)),
        "identity_count": identity_count,
        "tenants": sorted(set(pattern.tenants)),
        "tenant_count": tenant_count,
        "calls": pattern.count,
        "first_seen": format_timestamp(pattern.first_seen),
        "last_seen": format_timestamp(pattern.last_seen),
        "detected_at": detected_at,
    }
