"""Alert receivers and delivery: payload mapping, HMAC, backoff, and delivery behaviour against
a local aiohttp server standing in for a receiver (down, slow, refusing, coming back)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from alerting.delivery import AlertDelivery
from alerting.payloads import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    alertmanager_alert,
    backoff_delay,
    label_name,
    sign,
    verify,
)
from alerting.receivers import AlertmanagerReceiver, WebhookReceiver
from alerting.settings import AlertingSettings
from schemas.models import Actor, Alert
from tests.fixtures.alertmanager import wait_for
from tokentrail.broker.server import free_port
from tokentrail.settings import ConfigError, load

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def alert(fingerprint: str = "fp-1", status: str = "firing", **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "fingerprint": fingerprint,
        "status": status,
        "rule": "spend_spike",
        "severity": "page",
        "tenant_id": "acme",
        "scope": "key:k1",
        "summary": "agent:loop-7 spends 31x its baseline",
        "labels": {"model": "gpt-4o"},
        "key_id": "k1",
        "actor": Actor(type="agent", id="loop-7"),
        "root_actor": Actor(type="human", id="ana"),
        "value": 31.0,
        "threshold": 6.0,
        "starts_at": NOW - timedelta(minutes=3),
        **changes,
    }
    return Alert(**fields)


# --- payloads


def test_alertmanager_payload_puts_identity_in_labels_and_numbers_in_annotations():
    posted = alertmanager_alert(alert(evidence_url="http://grafana.example/d/1"), NOW, resend_interval=60)
    assert posted["labels"] == {
        "alertname": "spend_spike",
        "tenant": "acme",
        "severity": "page",
        "fingerprint": "fp-1",
        "scope": "key:k1",
        "key_id": "k1",
        "actor": "agent:loop-7",
        "root_actor": "human:ana",
        "model": "gpt-4o",
    }
    assert posted["annotations"] == {
        "summary": "agent:loop-7 spends 31x its baseline",
        "value": "31",
        "threshold": "6",
        "evidence": "http://grafana.example/d/1",
    }
    assert posted["startsAt"] == "2026-03-01T11:57:00.000Z"
    assert posted["endsAt"] == "2026-03-01T12:04:00.000Z", "firing: 4 resend intervals ahead"
    assert posted["generatorURL"] == "http://grafana.example/d/1"
    assert "generatorURL" not in alertmanager_alert(alert(evidence_url="see the SQL"), NOW, 60)


def test_alertmanager_payload_of_a_resolved_alert_ends_at_its_resolution():
    posted = alertmanager_alert(alert(status="resolved", ends_at=NOW - timedelta(seconds=5)), NOW, 60)
    assert posted["endsAt"] == "2026-03-01T11:59:55.000Z"
    assert alertmanager_alert(alert(status="resolved"), NOW, 60)["endsAt"] == "2026-03-01T12:00:00.000Z"


def test_alert_label_names_are_made_valid_for_alertmanager():
    assert label_name("root.human") == "root_human"
    assert label_name("9lives") == "_9lives"
    posted = alertmanager_alert(alert(labels={"model-name": "gpt-4o", "empty": ""}), NOW, 60)
    assert posted["labels"]["model_name"] == "gpt-4o"
    assert "empty" not in posted["labels"]


def test_annotations_evidence_sql_and_fields_the_model_gains_later_become_annotations():
    class RicherAlert(Alert):
        exhausts_at: datetime | None = None

    richer = RicherAlert(
        **alert(
            annotations={"baseline_usd_per_hour": "0.8"}, evidence_sql="SELECT 1", revision=3, updated_at=NOW
        ).model_dump(),
        exhausts_at=NOW + timedelta(hours=3),
    )
    annotations = alertmanager_alert(richer, NOW, 60)["annotations"]
    assert annotations["baseline_usd_per_hour"] == "0.8"
    assert annotations["evidence_sql"] == "SELECT 1"
    assert annotations["exhausts_at"] == "2026-03-01T15:00:00.000Z"
    assert "revision" not in annotations and "updated_at" not in annotations


def test_signature_verifies_and_any_change_breaks_it():
    body = b'{"version":1,"alerts":[]}'
    signature = sign(b"s3cret", "1767225600", body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(b"s3cret", "1767225600", body, signature)
    assert not verify(b"s3cret", "1767225601", body, signature)
    assert not verify(b"s3cret", "1767225600", body + b" ", signature)
    assert not verify(b"other", "1767225600", body, signature)


def test_backoff_doubles_up_to_its_cap_and_jitter_scales_it():
    assert [backoff_delay(n, 0.5, 60, 1.0) for n in range(9)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(3, 0.5, 60, 0.5) == 2.0
    assert backoff_delay(10_000, 0.5, 60, 1.0) == 60


# --- settings


def test_settings_reject_a_receiver_url_that_is_not_http(monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_WEBHOOK_URL", "ftp://hooks.example")
    with pytest.raises(ConfigError, match="TOKENTRAIL_WEBHOOK_URL"):
        load(AlertingSettings)


def test_no_receiver_configured_means_no_delivery(monkeypatch):
    for name in ("TOKENTRAIL_ALERTMANAGER_URL", "TOKENTRAIL_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    assert AlertDelivery.from_settings(AlertingSettings()) is None
    both = AlertingSettings(alertmanager_url="http://127.0.0.1:9093", webhook_url="http://127.0.0.1:8080/hook")
    delivery = AlertDelivery.from_settings(both)
    assert delivery is not None and delivery.receivers == ["alertmanager", "webhook"]


# --- a receiver on a local aiohttp server


class FakeReceiver:
    """An HTTP server in its own thread that records each POST and answers `self.status`
    (or hangs until `release()` when `self.hang`)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status = 200
        self.hang = False
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._released: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if self.hang:
            assert self._released is not None
            await self._released.wait()
        return web.Response(status=self.status, text="ok" if self.status < 300 else "no")

    async def _start(self) -> None:
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> FakeReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def release(self) -> None:
        assert self._released is not None
        self._loop.call_soon_threadsafe(self._released.set)

    def stop(self) -> None:
        if self._runner is not None:
            self.release()
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert received, in order (webhook bodies)."""
        return [a for _, body in self.requests for a in orjson.loads(body)["alerts"]]


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    fake = FakeReceiver().start()
    yield fake
    fake.stop()


def counter(name: str, receiver_name: str) -> float:
    return REGISTRY.get_sample_value(name, {"receiver": receiver_name}) or 0.0


def test_webhook_posts_the_alert_contract_signed(receiver):
    delivery = AlertDelivery([WebhookReceiver(receiver.url + "/hook", b"s3cret")]).start()
    try:
        delivery.submit(alert())
        assert delivery.flush(10)
    finally:
        delivery.close()
    [(headers, body)] = receiver.requests
    assert verify(b"s3cret", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert abs(int(headers[TIMESTAMP_HEADER]) - time.time()) < 60
    [sent] = orjson.loads(body)["alerts"]
    assert Alert.model_validate(sent) == alert()


def test_unsigned_webhook_has_no_signature_header(receiver):
    delivery = AlertDelivery([WebhookReceiver(receiver.url)]).start()
    try:
        delivery.submit(alert())
        assert delivery.flush(10)
    finally:
        delivery.close()
    [(headers, _)] = receiver.requests
    assert SIGNATURE_HEADER not in headers and TIMESTAMP_HEADER not in headers


def test_a_receiver_that_comes_back_gets_the_latest_state_of_each_alert(receiver):
    receiver.status = 503
    failed_before = counter("tokentrail_alerts_failed_total", "webhook")
    delivered_before = counter("tokentrail_alerts_delivered_total", "webhook")
    delivery = AlertDelivery([WebhookReceiver(receiver.url)], retry_base=0.05, retry_max=0.2).start()
    try:
        delivery.submit(alert("fp-1"))
        wait_for(lambda: len(receiver.requests) >= 3)  # retried while down
        delivery.submit(alert("fp-1", status="resolved", ends_at=NOW))
        delivery.submit(alert("fp-2"))
        receiver.status = 200
        assert delivery.flush(10)
    finally:
        delivery.close()
    delivered = receiver.requests[-1]
    states = {a["fingerprint"]: a["status"] for a in orjson.loads(delivered[1])["alerts"]}
    assert states == {"fp-1": "resolved", "fp-2": "firing"}, "fp-1's firing state was superseded while down"
    assert counter("tokentrail_alerts_failed_total", "webhook") - failed_before >= 3
    assert counter("tokentrail_alerts_delivered_total", "webhook") - delivered_before == 2


def test_alerts_submitted_while_nothing_listens_are_delivered_once_the_receiver_starts():
    port = free_port()
    delivery = AlertDelivery([WebhookReceiver(f"http://127.0.0.1:{port}")], retry_base=0.05, retry_max=0.2).start()
    try:
        delivery.submit(alert("fp-1"))
        time.sleep(0.5)
        assert delivery.pending() == 1
        fake = FakeReceiver(port).start()
        try:
            assert delivery.flush(10)
            assert [a["fingerprint"] for a in fake.alerts()] == ["fp-1"]
        finally:
            fake.stop()
    finally:
        delivery.close()


def test_a_hanging_receiver_never_slows_submit(receiver):
    receiver.hang = True
    delivery = AlertDelivery([WebhookReceiver(receiver.url)], timeout=30).start()
    try:
        delivery.submit(alert("first"))
        wait_for(lambda: receiver.requests)  # the receiver now holds the only request open
        alerts = [alert(f"fp-{n}") for n in range(5000)]
        started = time.perf_counter()
        for each in alerts:
            delivery.submit(each)
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0, f"5000 submits took {elapsed:.2f}s against a hanging receiver"
        assert len(receiver.requests) == 1
        receiver.hang = False
        receiver.release()
        assert delivery.flush(20)
        assert {a["fingerprint"] for a in receiver.alerts()} == {"first"} | {f"fp-{n}" for n in range(5000)}
    finally:
        delivery.close()


def test_pending_alerts_are_bounded_and_the_overflow_is_counted():
    port = free_port()  # nothing listens
    dropped_before = counter("tokentrail_alerts_dropped_total", "webhook")
    delivery = AlertDelivery([WebhookReceiver(f"http://127.0.0.1:{port}")], max_pending=5, retry_base=10)
    try:
        delivery.start()
        for n in range(8):
            delivery.submit(alert(f"fp-{n}"))
        delivery.submit(alert("fp-0", status="resolved", ends_at=NOW))  # a known fingerprint still updates
        assert delivery.pending() == 5
        assert counter("tokentrail_alerts_dropped_total", "webhook") - dropped_before == 3
    finally:
        delivery.close(timeout=1)


def test_a_refused_batch_is_not_retried_forever(receiver):
    receiver.status = 400
    rejected_before = counter("tokentrail_alerts_rejected_total", "webhook")
    delivery = AlertDelivery([WebhookReceiver(receiver.url)], retry_base=0.01).start()
    try:
        delivery.submit(alert())
        assert delivery.flush(10)
        receiver.status = 200  # before the next submit: the delivery thread may post it at once
        delivery.submit(alert("fp-2"))
        assert delivery.flush(10)
    finally:
        delivery.close()
    assert len(receiver.requests) == 2
    assert counter("tokentrail_alerts_rejected_total", "webhook") - rejected_before == 1


def test_alertmanager_receiver_reposts_firing_alerts_until_resolved(receiver):
    delivery = AlertDelivery([AlertmanagerReceiver(receiver.url, resend_interval=0.2)]).start()
    try:
        delivery.submit(alert("fp-1"))
        wait_for(lambda: len(receiver.requests) >= 3)
        assert all(path_alerts(body) == ["fp-1"] for _, body in receiver.requests)
        delivery.submit(alert("fp-1", status="resolved", ends_at=NOW))
        assert delivery.flush(5)
        wait_for(lambda: orjson.loads(receiver.requests[-1][1])[0]["endsAt"] == "2026-03-01T12:00:00.000Z")
        settled = len(receiver.requests)
        time.sleep(0.8)
        assert len(receiver.requests) == settled, "a resolved alert is not re-posted"
    finally:
        delivery.close()


def path_alerts(body: bytes) -> list[str]:
    return [a["labels"]["fingerprint"] for a in orjson.loads(body)]


def test_alerts_deliver_without_a_receiver_or_with_a_bad_url_is_one_line(monkeypatch, capsys):
    from tokentrail.cli import main

    for name in ("TOKENTRAIL_ALERTMANAGER_URL", "TOKENTRAIL_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["alerts", "deliver"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TOKENTRAIL_ALERTMANAGER_URL" in err
    monkeypatch.setenv("TOKENTRAIL_ALERTMANAGER_URL", "localhost:9093")
    assert main(["alerts", "deliver"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TOKENTRAIL_ALERTMANAGER_URL" in err and "http(s) URL" in err


def test_an_alert_whose_resolution_alertmanager_refused_is_not_reposted(receiver):
    delivery = AlertDelivery([AlertmanagerReceiver(receiver.url, resend_interval=0.2)]).start()
    try:
        delivery.submit(alert("fp-1"))
        wait_for(lambda: len(receiver.requests) >= 2)  # delivered, then re-posted while firing
        receiver.status = 400
        delivery.submit(alert("fp-1", status="resolved", ends_at=NOW))
        wait_for(
            lambda: any(orjson.loads(body)[0]["endsAt"] == "2026-03-01T12:00:00.000Z" for _, body in receiver.requests)
        )
        settled = len(receiver.requests)
        time.sleep(0.8)  # four resend intervals
    finally:
        delivery.close()
    assert len(receiver.requests) == settled, "the refused resolution must not leave the alert re-posted as firing"
