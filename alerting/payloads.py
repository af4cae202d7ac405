"""What each receiver is sent for an `Alert`: pure functions, no I/O.

Alertmanager (v2 API, `postableAlert`): identity in labels (`alertname` is the rule, then
tenant, severity, our fingerprint and the alert's own labels such as scope), numbers in
annotations (summary, value, threshold, evidence). `endsAt` is the resolve time for a
resolved alert; for a firing one it is `resend_interval * 4` ahead, and the alert is re-posted
every interval, as Prometheus does: Alertmanager resolves an alert whose `endsAt` passed, so
if tokentrail stops, its alerts resolve by themselves instead of firing forever.

Webhook: the alert's own JSON form (the `tokentrail.alerts` contract) in a versioned envelope,
optionally signed (see `sign`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta
from typing import Any

from schemas.models import Actor, Alert, format_timestamp

WEBHOOK_VERSION = 1
RESEND_ENDS_AT_FACTOR = 4
"""Firing alerts get endsAt = now + 4 resend intervals, Prometheus's own margin for missed posts."""

SIGNATURE_HEADER = "X-Tokentrail-Signature"
TIMESTAMP_HEADER = "X-Tokentrail-Timestamp"

_IDENTITY_FIELDS = ("fingerprint", "status", "rule", "severity", "tenant_id", "labels", "starts_at", "ends_at")
_WHO_FIELDS = ("scope", "key_id", "actor", "root_actor")
"""Who and what inside the tenant: labels too, when the alert has them."""
_NUMBER_FIELDS = ("summary", "value", "threshold", "evidence_url")
_RECEIVER_BLIND = ("updated_at", "revision")
"""Bookkeeping of the alert's life that receivers already see (endsAt, re-posts) or do not need."""
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def label_name(name: str) -> str:
    """An Alertmanager label name (`[a-zA-Z_][a-zA-Z0-9_]*`): other characters become `_`."""
    cleaned = _LABEL_NAME.sub("_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"_{cleaned}"


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Actor):
        return f"{value.type}:{value.id}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def alertmanager_labels(alert: Alert) -> dict[str, str]:
    """The identity of the alert: what Alertmanager groups, routes, silences and dedups on."""
    labels = {label_name(k): v for k, v in alert.labels.items() if v != ""}
    for name in _WHO_FIELDS:
        value = getattr(alert, name, None)
        if value is not None and value != "":
            labels[name] = _text(value)
    labels.update(
        alertname=alert.rule,
        tenant=alert.tenant_id,
        severity=alert.severity,
        fingerprint=alert.fingerprint,
    )
    return labels


def alertmanager_annotations(alert: Alert) -> dict[str, str]:
    """The numbers and text of the alert, which may change while it fires without changing its identity.

    Fields the `Alert` model gains later (and an `annotations` dict, if it has one) are carried too
    (`extra_annotations`), so a richer alert reaches Alertmanager without a change here.
    """
    annotations: dict[str, str] = {"summary": alert.summary}
    if alert.value is not None:
        annotations["value"] = _text(alert.value)
    if alert.threshold is not None:
        annotations["threshold"] = _text(alert.threshold)
    if alert.evidence_url:
        annotations["evidence"] = alert.evidence_url
    annotations.update(extra_annotations(alert))
    return annotations


def extra_annotations(alert: Alert) -> dict[str, str]:
    """Fields of the alert beyond the ones every receiver maps by name, as text: the entries
    of a dict field (such as `annotations`) each under its own key, any other field under its name."""
    extra: dict[str, str] = {}
    for name in type(alert).model_fields:
        if name in _IDENTITY_FIELDS or name in _WHO_FIELDS or name in _NUMBER_FIELDS or name in _RECEIVER_BLIND:
            continue
        value = getattr(alert, name)
        if value is None or value == "" or value == {} or value == []:
            continue
        if isinstance(value, dict):
            extra.update({label_name(str(k)): _text(v) for k, v in value.items() if v is not None})
        else:
            extra[label_name(name)] = _text(value)
    return extra


def alertmanager_alert(alert: Alert, now: datetime, resend_interval: float) -> dict[str, Any]:
    """One `postableAlert` of Alertmanager's v2 API (api/v2/openapi.yaml)."""
    if alert.status == "resolved":
        ends_at = alert.ends_at or now
    else:
        ends_at = now + timedelta(seconds=resend_interval * RESEND_ENDS_AT_FACTOR)
    posted: dict[str, Any] = {
        "labels": alertmanager_labels(alert),
        "annotations": alertmanager_annotations(alert),
        "startsAt": format_timestamp(alert.starts_at),
        "endsAt": format_timestamp(ends_at),
    }
    if alert.evidence_url and alert.evidence_url.startswith(("http://", "https://")):
        posted["generatorURL"] = alert.evidence_url
    return posted


def webhook_body(alerts: list[Alert]) -> dict[str, Any]:
    """`{"version": 1, "alerts": [<Alert JSON>, ...]}`: the contract of `tokentrail.alerts`, batched."""
    return {"version": WEBHOOK_VERSION, "alerts": [alert.model_dump(mode="json") for alert in alerts]}


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body).

    The receiver recomputes it over the raw body and the `X-Tokentrail-Timestamp` header and
    compares in constant time; signing the timestamp lets it refuse old replays.
    """
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does with a signed webhook POST (used by the tests, and an example)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Delay before retry number `attempt` (0 = first retry): base * 2**attempt, capped, scaled by
    `jitter` in [0.5, 1] so receivers coming back are not hit by every sender at the same instant."""
    return min(cap, base * 2.0 ** min(attempt, 30)) * jitter
