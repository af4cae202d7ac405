"""Rows of the ClickHouse `alerts` and `failure_patterns` tables (clickhouse/0009, 0010).

Pure mappings with the storage contract's keys; timestamps as RFC 3339 strings, which the
inserts accept (docs/storage.md). Both tables are ReplacingMergeTree keyed so a re-published
or replayed state replaces its row: the mapping is deterministic (no clock, no random id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from alerting.payloads import extra_annotations
from schemas.models import SYSTEM_TENANT, Alert, format_timestamp

SIGNATURE_PARTS = ("provider", "model", "status", "error_type", "error_code", "context_hash")
"""What makes two failures the same failure (DESIGN 5)."""


def alert_row(alert: Alert) -> dict[str, Any]:
    """The `alerts` row of one alert state. `updated_at` (the replacing version) is the alert's
    own `updated_at` if the model carries one, else its end or start: never the wall clock, so a
    replay makes the same row."""
    updated = getattr(alert, "updated_at", None) or alert.ends_at or alert.starts_at
    scope = getattr(alert, "scope", None) or alert.labels.get("scope", "")
    return {
        "fingerprint": alert.fingerprint,
        "status": alert.status,
        "rule": alert.rule,
        "severity": alert.severity,
        "tenant_id": alert.tenant_id,
        "scope": scope,
        "summary": alert.summary,
        "labels": dict(alert.labels),
        "annotations": extra_annotations(alert),
        "value": alert.value,
        "threshold": alert.threshold,
        "starts_at": format_timestamp(alert.starts_at),
        "ends_at": format_timestamp(alert.ends_at) if alert.ends_at else None,
        "updated_at": format_timestamp(updated),
        "evidence_url": alert.evidence_url or "",
    }


def signature_id(parts: Mapping[str, Any]) -> str:
    """A short stable id of a failure signature: the first 16 hex digits of the SHA-256 of its parts."""
    canonical = "\x1f".join(str(parts.get(name) or "") for name in SIGNATURE_PARTS)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _moment(pattern: Mapping[str, Any], name: str) -> str:
    value = pattern.get(name)
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, str) and value:
        try:
            return format_timestamp(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise ValueError(f"failure pattern: {name} must be a timestamp, got {value!r}")


def pattern_row(pattern: Mapping[str, Any]) -> dict[str, Any]:
    """The `failure_patterns` row of a detected pattern.

    `pattern` has `tenant_id` (the system tenant for a cross-tenant pattern), `signature` (an id,
    or a mapping of SIGNATURE_PARTS), the signature parts (top level or inside `signature`),
    `identities`, `tenants` (defaults to the pattern's own tenant), `first_seen`, `last_seen`,
    `count` (failed calls), and optionally `fingerprint` (of its alert). ValueError names a
    missing or malformed field.
    """
    tenant = pattern.get("tenant_id")
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("failure pattern: tenant_id is required")
    signature = pattern.get("signature")
    parts: Mapping[str, Any] = signature if isinstance(signature, Mapping) else pattern
    if isinstance(signature, Mapping):
        signature = signature_id(signature)
    if not isinstance(signature, str) or not signature:
        raise ValueError("failure pattern: signature is required (an id or its parts)")
    identities = sorted({str(i) for i in pattern.get("identities") or ()})
    default_tenants = () if tenant == SYSTEM_TENANT else (tenant,)
    tenants = sorted({str(t) for t in pattern.get("tenants") or default_tenants})
    status = parts.get("status") or 0
    if not isinstance(status, int) or not 0 <= status <= 599:
        raise ValueError(f"failure pattern: status must be an HTTP status, got {status!r}")
    return {
        "tenant_id": tenant,
        "signature": signature,
        "provider": str(parts.get("provider") or ""),
        "model": str(parts.get("model") or ""),
        "status": status,
        "error_type": str(parts.get("error_type") or ""),
        "error_code": str(parts.get("error_code") or ""),
        "context_hash": str(parts.get("context_hash") or ""),
        "identities": identities,
        "identity_count": len(identities),
        "tenants": tenants,
        "tenant_count": len(tenants),
        "calls": int(pattern.get("count") or pattern.get("calls") or 0),
        "first_seen": _moment(pattern, "first_seen"),
        "last_seen": _moment(pattern, "last_seen"),
        "fingerprint": str(pattern.get("fingerprint") or ""),
    }
