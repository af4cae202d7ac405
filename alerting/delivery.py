"""Deliver alerts to receivers without ever stopping or slowing the caller.

`AlertDelivery.submit(alert)` takes a lock, stores the alert as the latest state of its
fingerprint for each receiver and returns: no I/O, no waiting, whatever the receivers do. A
background thread runs an asyncio loop with one lane per receiver that posts what is pending
in batches, retries failures with capped exponential backoff (with jitter), and forgets an
alert state only once the receiver accepted it. While a receiver is down its lane keeps only
the latest state per fingerprint (a fired-then-resolved alert is delivered once, resolved),
at most `max_pending` fingerprints; a new fingerprint beyond that is dropped and counted.
For receivers with a `resend_interval` (Alertmanager) the lane also re-posts every firing
alert at that interval until its resolution is delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from typing import Protocol

import aiohttp

from alerting import metrics
from alerting.payloads import backoff_delay
from alerting.receivers import AlertmanagerReceiver, DeliveryFailed, WebhookReceiver
from alerting.settings import AlertingSettings
from schemas.models import Alert

log = logging.getLogger("tokentrail.alerting")


class Receiver(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def resend_interval(self) -> float | None: ...

    async def send(self, session: aiohttp.ClientSession, alerts: list[Alert]) -> None: ...


class _Lane:
    """What one receiver still has to get; `pending` and `firing` are guarded by `lock`."""

    def __init__(self, receiver: Receiver, max_pending: int) -> None:
        self.receiver = receiver
        self.name = receiver.name
        self.max_pending = max_pending
        self.lock = threading.Lock()
        self.pending: dict[str, Alert] = {}
        self.firing: dict[str, Alert] = {}
        """Delivered and still firing: re-posted every resend interval (resending receivers only)."""
        self.signalled = False
        self.wake: asyncio.Event | None = None
        self.down = False

    def put(self, alert: Alert) -> bool:
        """Latest state wins; False (and counted) if a new fingerprint finds the lane full. Returns
        True when the lane needs waking."""
        with self.lock:
            if alert.fingerprint not in self.pending and len(self.pending) >= self.max_pending:
                metrics.DROPPED.labels(self.name).inc()
                return False
            self.pending[alert.fingerprint] = alert
            metrics.PENDING.labels(self.name).set(len(self.pending))
            wake, self.signalled = not self.signalled, True
            return wake

    def take(self, limit: int) -> list[Alert]:
        with self.lock:
            self.signalled = False
            return [alert for _, alert in zip(range(limit), self.pending.values(), strict=False)]

    def settle(self, batch: list[Alert], keep_firing: bool, refused: bool = False) -> None:
        """Forget what was delivered or refused (unless a newer state arrived meanwhile); track
        what fires. A refused alert is not re-posted either: the receiver would refuse it again."""
        with self.lock:
            for alert in batch:
                if self.pending.get(alert.fingerprint) is alert:
                    del self.pending[alert.fingerprint]
                if not keep_firing:
                    continue
                if refused or alert.status == "resolved":
                    self.firing.pop(alert.fingerprint, None)
                elif alert.fingerprint in self.firing or len(self.firing) < self.max_pending:
                    self.firing[alert.fingerprint] = alert
                else:
                    metrics.DROPPED.labels(self.name).inc()
            metrics.PENDING.labels(self.name).set(len(self.pending))

    def requeue_firing(self) -> int:
        """Schedule every firing alert for a re-post (a newer pending state takes precedence)."""
        with self.lock:
            for fingerprint, alert in self.firing.items():
                self.pending.setdefault(fingerprint, alert)
            metrics.PENDING.labels(self.name).set(len(self.pending))
            return len(self.firing)

    def size(self) -> int:
        with self.lock:
            return len(self.pending)


class AlertDelivery:
    """Background delivery of alert state changes to a set of receivers (see module docstring)."""

    def __init__(
        self,
        receivers: list[Receiver],
        *,
        timeout: float = 5.0,
        retry_base: float = 0.5,
        retry_max: float = 60.0,
        max_pending: int = 10_000,
        batch_size: int = 100,
    ) -> None:
        if not receivers:
            raise ValueError("AlertDelivery needs at least one receiver")
        self._lanes = [_Lane(receiver, max_pending) for receiver in receivers]
        self._timeout = timeout
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._batch_size = batch_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: AlertingSettings) -> AlertDelivery | None:
        """The delivery the settings ask for, or None when no receiver is configured."""
        receivers: list[Receiver] = []
        if settings.alertmanager_url:
            receivers.append(AlertmanagerReceiver(settings.alertmanager_url, settings.alert_resend_seconds))
        if settings.webhook_url:
            secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else None
            receivers.append(WebhookReceiver(settings.webhook_url, secret))
        if not receivers:
            return None
        return cls(
            receivers,
            timeout=settings.alert_timeout_seconds,
            retry_max=settings.alert_retry_max_seconds,
            max_pending=settings.alert_max_pending,
        )

    @property
    def receivers(self) -> list[str]:
        return [lane.name for lane in self._lanes]

    def start(self) -> AlertDelivery:
        self._thread = threading.Thread(target=self._run, name="tokentrail-alert-delivery", daemon=True)
        self._thread.start()
        self._started.wait(5.0)
        return self

    def submit(self, alert: Alert) -> None:
        """Queue an alert state for every receiver; returns at once, never raises for a receiver's sake."""
        loop = self._loop
        for lane in self._lanes:
            if lane.put(alert) and loop is not None and lane.wake is not None:
                try:
                    loop.call_soon_threadsafe(lane.wake.set)
                except RuntimeError:  # the loop closed: nothing left to wake
                    pass

    def pending(self) -> int:
        """Alert states not yet accepted by their receiver, over all receivers."""
        return sum(lane.size() for lane in self._lanes)

    def flush(self, timeout: float) -> bool:
        """Wait until every receiver took everything submitted so far; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background thread; what is still pending is given up (and logged)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        left = self.pending()
        if left:
            log.warning("alert delivery stopped with %d alert state(s) undelivered", left)

    # --- the background thread

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        wakes = []
        for lane in self._lanes:
            lane.wake = asyncio.Event()
            lane.wake.set()  # alerts submitted before start: look at once
            wakes.append(lane.wake)
        self._loop = asyncio.get_running_loop()
        self._started.set()
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            lanes = [
                asyncio.create_task(self._drive(lane, wake, session))
                for lane, wake in zip(self._lanes, wakes, strict=True)
            ]
            await self._stop.wait()
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)

    async def _pause(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Sleep up to `seconds`, sooner if `event` is set."""
        if event is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass

    async def _drive(self, lane: _Lane, wake: asyncio.Event, session: aiohttp.ClientSession) -> None:
        """One receiver's loop: post what is pending, back off on failure, re-post firing alerts."""
        interval = lane.receiver.resend_interval
        keep_firing = interval is not None
        next_resend = time.monotonic() + interval if interval is not None else float("inf")
        attempt = 0
        while True:
            if time.monotonic() >= next_resend:
                lane.requeue_firing()
                next_resend = time.monotonic() + (interval or 0.0)
            batch = lane.take(self._batch_size)
            if not batch:
                await self._pause(max(0.0, min(next_resend - time.monotonic(), 3600.0)), wake)
                wake.clear()
                continue
            try:
                await lane.receiver.send(session, batch)
            except DeliveryFailed as exc:
                metrics.FAILED.labels(lane.name).inc(len(batch))
                if not exc.retryable:
                    metrics.REJECTED.labels(lane.name).inc(len(batch))
                    log.error("%s refused %d alert(s), not retried: %s", lane.name, len(batch), exc)
                    lane.settle(batch, keep_firing, refused=True)
                    continue
                if not lane.down:
                    log.warning("%s unreachable, retrying with backoff: %s", lane.name, exc)
                    lane.down = True
                await self._pause(backoff_delay(attempt, self._retry_base, self._retry_max, random.uniform(0.5, 1.0)))
                attempt += 1
                continue
            if lane.down:
                log.warning("%s reachable again after %d failed attempt(s)", lane.name, attempt)
                lane.down = False
            attempt = 0
            metrics.DELIVERED.labels(lane.name).inc(len(batch))
            lane.settle(batch, keep_firing)


def delivery_from_environment() -> AlertDelivery | None:
    """`AlertDelivery.from_settings` of the TOKENTRAIL_* environment (ConfigError on bad values)."""
    from tokentrail.settings import load

    return AlertDelivery.from_settings(load(AlertingSettings))
