"""`tokentrail alerts deliver` wiring: Alert records on the real `tokentrail.alerts` topic reach a
real Alertmanager, a resolution clears them there, and a bad record is skipped."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from alerting.delivery import AlertDelivery
from alerting.receivers import AlertmanagerReceiver
from alerting.relay import relay
from schemas.models import Actor, Alert
from tests.fixtures.alertmanager import wait_for
from tests.test_alertmanager_e2e import ours
from tokentrail.control.publish import publish
from tokentrail.topics import ALERTS

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def spike(status: str, ends_at: datetime | None = None) -> Alert:
    return Alert(
        fingerprint="a1b2c3d4e5f60718",
        status=status,  # type: ignore[arg-type]
        rule="spend_spike",
        severity="page",
        tenant_id="acme",
        scope="key:k-loop",
        summary="agent:loop-7 (for human:ana) spends 31x its baseline since 12:03",
        key_id="k-loop",
        actor=Actor(type="agent", id="loop-7"),
        root_actor=Actor(type="human", id="ana"),
        annotations={"baseline_usd_per_hour": "0.80"},
        value=24.8,
        threshold=0.8,
        starts_at=datetime.now(UTC) - timedelta(minutes=4),
        ends_at=ends_at,
        updated_at=ends_at,
        revision=1 if ends_at else 0,
    )


def test_alert_records_on_the_topic_reach_alertmanager_and_resolve_there(kafka_topics, alertmanager):
    topic = kafka_topics.name(ALERTS)
    delivery = AlertDelivery([AlertmanagerReceiver(alertmanager.url, resend_interval=60)]).start()
    stop = threading.Event()
    bad_before = REGISTRY.get_sample_value("tokentrail_alerts_bad_records_total") or 0.0
    worker = threading.Thread(
        target=relay,
        args=({"bootstrap.servers": kafka_topics.bootstrap}, topic, delivery, stop, f"relay-{uuid.uuid4().hex}"),
        daemon=True,
    )
    worker.start()
    try:
        firing = spike("firing")
        publish({"bootstrap.servers": kafka_topics.bootstrap}, topic, "garbage", b'{"not": "an alert"}')
        publish(
            {"bootstrap.servers": kafka_topics.bootstrap}, topic, firing.fingerprint, firing.model_dump_json().encode()
        )
        [shown] = wait_for(lambda: ours(alertmanager.url, firing.fingerprint), timeout=30)
        assert {k: shown["labels"][k] for k in ("alertname", "tenant", "scope", "actor", "root_actor")} == {
            "alertname": "spend_spike",
            "tenant": "acme",
            "scope": "key:k-loop",
            "actor": "agent:loop-7",
            "root_actor": "human:ana",
        }
        assert shown["annotations"]["baseline_usd_per_hour"] == "0.80"
        assert (REGISTRY.get_sample_value("tokentrail_alerts_bad_records_total") or 0.0) - bad_before == 1

        resolved = spike("resolved", ends_at=datetime.now(UTC))
        publish(
            {"bootstrap.servers": kafka_topics.bootstrap},
            topic,
            resolved.fingerprint,
            resolved.model_dump_json().encode(),
        )
        wait_for(lambda: not ours(alertmanager.url, firing.fingerprint), timeout=30)
    finally:
        stop.set()
        worker.join(10)
        delivery.close()
    assert not worker.is_alive()
