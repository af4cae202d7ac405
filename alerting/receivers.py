"""The HTTP side of alert delivery: one POST per batch, success or `DeliveryFailed`.

Receivers know nothing of queues or retries (`alerting.delivery` does that); they turn a
batch of alerts into one request with `alerting.payloads` and judge the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import orjson

from alerting.payloads import SIGNATURE_HEADER, TIMESTAMP_HEADER, alertmanager_alert, sign, webhook_body
from schemas.models import Alert

JSON = {"Content-Type": "application/json"}


class DeliveryFailed(Exception):
    """A receiver did not take the batch. `retryable` is False when it refused the content
    itself (a 4xx other than 408/429): sending the same batch again cannot succeed."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status < 300:
                return
            detail = (await response.text(errors="replace"))[:200].strip()
            retryable = response.status >= 500 or response.status in (408, 429)
            raise DeliveryFailed(f"{url} answered {response.status}: {detail}", retryable)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryFailed(f"{url}: {type(exc).__name__}: {exc}".rstrip(": ")) from None


class AlertmanagerReceiver:
    """POST /api/v2/alerts of a Prometheus Alertmanager; firing alerts are re-posted every
    `resend_interval` seconds (the delivery does it) with `endsAt` ahead of the next post."""

    name = "alertmanager"

    def __init__(
        self, base_url: str, resend_interval: float, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self.resend_interval = resend_interval
        self._clock = clock

    async def send(self, session: aiohttp.ClientSession, alerts: list[Alert]) -> None:
        now = self._clock()
        body = orjson.dumps([alertmanager_alert(alert, now, self.resend_interval) for alert in alerts])
        await _post(session, self.url, body, JSON)


class WebhookReceiver:
    """POST `{"version": 1, "alerts": [...]}` to a URL, HMAC-signed when a secret is set."""

    name = "webhook"
    resend_interval: float | None = None

    def __init__(self, url: str, secret: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self._secret = secret
        self._clock = clock

    async def send(self, session: aiohttp.ClientSession, alerts: list[Alert]) -> None:
        body = orjson.dumps(webhook_body(alerts))
        headers = dict(JSON)
        if self._secret:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        await _post(session, self.url, body, headers)
