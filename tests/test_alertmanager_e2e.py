"""Alert delivery against a real Prometheus Alertmanager (Debian's package, see tests/fixtures/alertmanager.py)."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from alerting.delivery import AlertDelivery
from alerting.receivers import AlertmanagerReceiver
from schemas.models import Alert
from tests.fixtures.alertmanager import wait_for

pytestmark = pytest.mark.slow


def active_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true&silenced=true&inhibited=true", timeout=5) as reply:
        alerts: list[dict[str, Any]] = orjson.loads(reply.read())
        return alerts


def ours(url: str, fingerprint: str) -> list[dict[str, Any]]:
    return [a for a in active_alerts(url) if a["labels"].get("fingerprint") == fingerprint]


def burn_alert(status: str = "firing", ends_at: datetime | None = None) -> Alert:
    return Alert(
        fingerprint="7f3a9c01d2e4b5a6",
        status=status,  # type: ignore[arg-type]
        rule="error_budget_burn",
        severity="page",
        tenant_id="acme",
        summary="acme burns its error budget at 14.8x over 1 h and 5 m",
        scope="tenant",
        labels={"window": "1h/5m"},
        value=14.8,
        threshold=14.4,
        starts_at=datetime.now(UTC) - timedelta(minutes=2),
        ends_at=ends_at,
        evidence_url="http://grafana.example/d/incidents?var-tenant=acme",
    )


def test_a_firing_alert_appears_with_its_labels_and_is_gone_once_resolved(alertmanager):
    delivery = AlertDelivery([AlertmanagerReceiver(alertmanager.url, resend_interval=60)]).start()
    try:
        firing = burn_alert()
        delivery.submit(firing)
        [shown] = wait_for(lambda: ours(alertmanager.url, firing.fingerprint))
        assert shown["labels"] == {
            "alertname": "error_budget_burn",
            "tenant": "acme",
            "severity": "page",
            "fingerprint": firing.fingerprint,
            "scope": "tenant",
            "window": "1h/5m",
        }
        assert shown["annotations"]["value"] == "14.8"
        assert shown["annotations"]["threshold"] == "14.4"
        assert shown["annotations"]["summary"] == firing.summary
        assert shown["generatorURL"] == firing.evidence_url
        assert shown["status"]["state"] == "active"
        ends_at = datetime.fromisoformat(shown["endsAt"].replace("Z", "+00:00"))
        assert ends_at > datetime.now(UTC) + timedelta(minutes=3), "a firing alert must not expire before its re-post"

        delivery.submit(burn_alert("resolved", ends_at=datetime.now(UTC)))
        wait_for(lambda: not ours(alertmanager.url, firing.fingerprint))
    finally:
        delivery.close()


def test_a_firing_alert_is_reposted_so_alertmanager_keeps_it_active(alertmanager):
    """endsAt is 4 resend intervals ahead: without the re-posts it would resolve after 2 s."""
    delivery = AlertDelivery([AlertmanagerReceiver(alertmanager.url, resend_interval=0.5)]).start()
    try:
        firing = burn_alert()
        delivery.submit(firing)
        [first] = wait_for(lambda: ours(alertmanager.url, firing.fingerprint))
        time.sleep(4.0)
        [later] = ours(alertmanager.url, firing.fingerprint)
        assert later["endsAt"] > first["endsAt"]
    finally:
        delivery.close()
    # Stopped: nobody re-posts, so Alertmanager resolves it on its own once endsAt passes.
    wait_for(lambda: not ours(alertmanager.url, firing.fingerprint), timeout=15)
