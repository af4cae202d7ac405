"""Get every record to Kafka without ever blocking a request: the producer when Kafka takes
records, the spool on local disk when it does not, and back in order when it returns.

- `submit()` (event loop) hands a record to librdkafka (idempotent, lz4, batched by
  linger.ms): non-blocking, microseconds. A full producer queue (BufferError) sends the record
  to the spool instead.
- A background thread polls the producer. Delivery reports are on for failures only: a record
  Kafka did not acknowledge within `message.timeout.ms` (broker down, or purged at shutdown)
  comes back through the report and is appended to the spool, so nothing in librdkafka's
  queue is lost when Kafka dies.
- When librdkafka reports that no broker is reachable, records it has not sent yet are purged
  from its queue into the spool at once, rather than after the message timeout.
- From the first spooled record on, new records go straight to the spool (keeping their
  order) until it is drained. The thread fsyncs the spool once per interval and, when Kafka
  answers a metadata request again, drains sealed segments in order through the same producer,
  marks progress per batch and removes each finished segment; then new records go to Kafka
  again. A drained record is either acknowledged or, if Kafka fails again, re-spooled by its
  failure report, never both, so the topic gets each record once (see docs/gateway.md for
  the crash cases).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from gateway.spool import Spool
from tokentrail.kafka_log import kafka_logger

log = logging.getLogger("tokentrail.gateway.delivery")

DRAIN_BATCH = 5000
"""Records produced between flushes (and drained marks) while draining the spool."""
RETRY_DRAIN_AFTER_S = 1.0
SPOOL_HEADROOM = 16 * 1024 * 1024
"""Free bytes below which the spool counts as full (/readyz)."""


def producer_config(bootstrap: str, message_timeout_ms: int, linger_ms: int) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,  # retries never duplicate; acks=all
        "compression.type": "lz4",
        "linger.ms": linger_ms,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 256 * 1024,
        "message.timeout.ms": message_timeout_ms,
        "delivery.report.only.error": True,
        "reconnect.backoff.max.ms": 1000,
        "socket.keepalive.enable": True,
    }


class Delivery:
    def __init__(
        self, config: dict[str, Any], topic: str, spool: Spool, metrics, fsync_interval_s: float = 1.0
    ) -> None:
        self.topic = topic
        self.spool = spool
        self.metrics = metrics
        self.fsync_interval_s = fsync_interval_s
        self.spooling = bool(spool.segments())
        """While True every record goes to the spool; a restart with a spool left keeps its order."""
        self._config = {
            **config,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            "logger": kafka_logger("tokentrail.gateway.librdkafka"),
        }
        self.producer = Producer(self._config)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drain_failed = False
        self._fatal: KafkaError | None = None
        self._brokers_down = False

    # --- event loop side

    def submit(self, key: bytes, value: bytes) -> None:
        if self.spooling:
            with self._lock:
                if self.spooling:
                    self.spool.append(key, value)
                    self.metrics.records_spooled.inc()
                    return
        try:
            self.producer.produce(self.topic, value, key)
        except BufferError:
            self._to_spool(key, value, "the producer queue is full")
        except KafkaException as exc:
            self._to_spool(key, value, f"the producer refused the record: {exc}")

    def spool_writable(self) -> bool:
        """Whether records could go to the spool now: its directory is writable and its disk
        has room for a segment's worth of records."""
        try:
            return (
                os.access(self.spool.directory, os.W_OK)
                and shutil.disk_usage(self.spool.directory).free > SPOOL_HEADROOM
            )
        except OSError:
            return False

    # --- delivery thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tokentrail-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued within `timeout`; whatever Kafka did not take goes to the spool."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.producer.flush(timeout) > 0:
            self.producer.purge(in_queue=True, in_flight=False)
            self.producer.flush(0)  # serves the purge reports: they spool the records
            self.producer.poll(0)
        self.spool.close()

    def _run(self) -> None:
        next_sync = next_drain = time.monotonic()
        while not self._stop.is_set():
            try:
                self.producer.poll(0.05)
                now = time.monotonic()
                if now >= next_sync:
                    self.spool.sync()
                    next_sync = now + self.fsync_interval_s
                if self._fatal is not None:
                    self._replace_producer()
                if self._brokers_down:
                    self._brokers_down = False
                    self._spool_queued("no Kafka broker is reachable")
                if self.spooling and now >= next_drain:
                    if not self._drain():
                        next_drain = time.monotonic() + RETRY_DRAIN_AFTER_S
            except Exception:  # noqa: BLE001 - the delivery thread must outlive any one failure
                log.exception("delivery thread step failed; retrying")
                time.sleep(0.5)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.metrics.kafka_delivery_failures.inc()
            self._drain_failed = True
            self._to_spool(message.key(), message.value(), f"Kafka did not take a record: {error.str()}")

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("fatal Kafka producer error, replacing the producer: %s", error.str())
            self._fatal = error
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down = True
        else:
            log.debug("Kafka producer: %s", error.str())

    def _spool_queued(self, reason: str) -> None:
        """Kafka is gone: new records go to the spool at once, and so do the ones librdkafka
        has not sent yet (purged from its queue, they come back through their reports).
        Records already in flight wait for their acknowledgement or message timeout."""
        with self._lock:
            if not self.spooling:
                self.spooling = True
                log.warning("spooling records to %s: %s", self.spool.directory, reason)
        self.producer.purge(in_queue=True, in_flight=False)
        self.producer.poll(0)

    def _to_spool(self, key: bytes | None, value: bytes, reason: str) -> None:
        with self._lock:
            self.spool.append(key, value)
            self.metrics.records_spooled.inc()
            if not self.spooling:
                self.spooling = True
                log.warning("spooling records to %s: %s", self.spool.directory, reason)

    def _drain(self) -> bool:
        """Send the spool to Kafka in order. False if Kafka is not there (try again later)."""
        if not self._kafka_answers():
            return False
        while True:
            for segment in self.spool.sealed_segments():
                if not self._drain_segment(segment):
                    return False
            with self._lock:
                if not self.spool.has_active():
                    self.spooling = False
                    log.warning("spool drained: records go to Kafka again")
                    return True
                self.spool.seal()

    def _drain_segment(self, segment: Path) -> bool:
        self._drain_failed = False
        batch = 0
        offset = None
        for offset, key, value in self.spool.read(segment):
            self._produce_waiting(key, value)
            batch += 1
            if batch == DRAIN_BATCH:
                self._finish_batch(segment, offset, batch)
                batch = 0
                if self._drain_failed:
                    return False
        if offset is not None:
            self._finish_batch(segment, offset, batch)
        if self._drain_failed:
            return False
        self.spool.remove(segment)
        return True

    def _finish_batch(self, segment: Path, offset: int, count: int) -> None:
        # Every record of the batch is now either acknowledged or back in the spool through
        # its failure report (flush waits for both), so the mark may move past all of them.
        self.producer.flush()
        self.spool.mark_drained(segment, offset, count)
        self.metrics.records_drained.inc(count)

    def _produce_waiting(self, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value, key)
                return
            except BufferError:
                self.producer.poll(0.1)

    def _kafka_answers(self) -> bool:
        try:
            metadata = self.producer.list_topics(self.topic, timeout=1.0)
        except KafkaException:
            return False
        topic = metadata.topics.get(self.topic)
        return bool(metadata.brokers) and topic is not None and topic.error is None

    def _replace_producer(self) -> None:
        old, self._fatal = self.producer, None
        with self._lock:
            self.spooling = True
        self.producer = Producer(self._config)
        old.purge(in_queue=True, in_flight=True)
        old.flush(0)
