"""Follow compacted topics into in-memory state: from the beginning, then every new record.

One consumer, no consumer group (every replica reads every partition itself, nothing is
committed), `fetch.wait.max.ms` short so a new record is applied well within a second.
`catch_up()` reads up to the end as of now (the CLI's `keys list`, the gateway's readiness);
`start()` keeps following in a daemon thread. A record a handler cannot decode is logged and
skipped: one bad record never stops the follower.

`last_contact` is when Kafka last answered (a fetch that returned records or an end of
partition, or the heartbeat: a high-watermark query every `heartbeat_s`), so a process can tell
that it has been cut off from the control topics and fail closed (docs/gateway.md).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from tokentrail.errors import TokentrailError
from tokentrail.kafka_log import kafka_logger

log = logging.getLogger("tokentrail.control.follower")

Handler = Callable[[bytes | None, bytes | None], None]
"""Applies one record: (key, value); value None is a tombstone."""


class FollowerError(TokentrailError):
    """The topics could not be read (Kafka did not answer in time)."""


class TopicFollower:
    def __init__(
        self,
        bootstrap: str,
        handlers: dict[str, Handler],
        on_bad_record: Callable[[str, Exception], None] | None = None,
        kafka_config: dict[str, Any] | None = None,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.kafka_config = kafka_config or {}
        """Security settings (TLS/SASL) merged into the consumer's configuration."""
        self.heartbeat_s = heartbeat_s
        self.last_contact = time.monotonic()
        """Monotonic time Kafka last answered this follower."""
        self.handlers = handlers
        self.ready = threading.Event()
        """Set once everything that was on the topics when we started has been applied."""
        self.records_applied = 0
        self.bad_records = 0
        self._on_bad_record = on_bad_record
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._pending: set[tuple[str, int]] = set()

    def catch_up(self, timeout: float = 10.0) -> None:
        """Apply every record on the topics up to their end as of now; FollowerError on timeout.

        "As of now" holds on every call, not only the first: the high watermarks are read
        afresh, so a record this process just published is applied before we return.
        """
        deadline = time.monotonic() + timeout
        while self._consumer is None and not self._assign(0.2):
            self._check_deadline(deadline, timeout)
        ends = self._end_offsets(deadline, timeout)
        while True:
            positions = self._assigned().position([TopicPartition(topic, partition) for topic, partition in ends])
            if (
                all(
                    tp.offset >= ends[(tp.topic, tp.partition)] or ends[(tp.topic, tp.partition)] == 0
                    for tp in positions
                )
                and self.ready.is_set()
            ):
                return
            self._check_deadline(deadline, timeout)
            self._step(min(0.2, max(0.0, deadline - time.monotonic())))

    def _assigned(self) -> Consumer:
        if self._consumer is None:
            raise FollowerError("the consumer is not assigned yet")
        return self._consumer

    def _end_offsets(self, deadline: float, timeout: float) -> dict[tuple[str, int], int]:
        """High watermark of every assigned partition, retried while a new topic elects its leaders."""
        while True:
            try:
                return {
                    (tp.topic, tp.partition): self._assigned().get_watermark_offsets(tp, timeout=1.0)[1]
                    for tp in self._assigned().assignment()
                }
            except KafkaException as exc:
                log.debug("watermarks not readable yet: %s", exc)
                self._check_deadline(deadline, timeout)
                time.sleep(0.05)

    def _check_deadline(self, deadline: float, timeout: float) -> None:
        if time.monotonic() >= deadline:
            raise FollowerError(
                f"Kafka at {self.bootstrap} did not deliver {', '.join(self.handlers)} within {timeout:.0f}s"
            )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tokentrail-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def silent_for(self) -> float:
        """Seconds since Kafka last answered."""
        return time.monotonic() - self.last_contact

    def _run(self) -> None:
        next_heartbeat = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_heartbeat:
                    next_heartbeat = time.monotonic() + self.heartbeat_s
                    self._heartbeat()
                self._step(0.1)
            except Exception:  # noqa: BLE001 - the follower must outlive any one failure
                log.exception("identity/control follower step failed; retrying")
                time.sleep(0.5)

    def _heartbeat(self) -> None:
        """Ask the broker for one partition's high watermark (a real round trip, not the cache)."""
        if self._consumer is None:
            return
        assignment = self._consumer.assignment()
        if not assignment:
            return
        try:
            self._consumer.get_watermark_offsets(assignment[0], timeout=self.heartbeat_s, cached=False)
        except KafkaException as exc:
            log.debug("control topics heartbeat failed: %s", exc)
            return
        self.last_contact = time.monotonic()

    def _step(self, timeout: float) -> None:
        if self._consumer is None:
            if not self._assign(timeout):
                return
        for message in self._assigned().consume(num_messages=1000, timeout=timeout):
            topic = cast(str, message.topic())  # set on every consumed message
            error = message.error()
            if error is None or error.code() == KafkaError._PARTITION_EOF:
                self.last_contact = time.monotonic()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._reached_end(topic, cast(int, message.partition()))
                elif error.fatal():
                    raise KafkaException(error)
                continue
            handler = self.handlers[topic]
            try:
                handler(message.key(), message.value())
                self.records_applied += 1
            except ValueError as exc:
                self.bad_records += 1
                if self._on_bad_record:
                    self._on_bad_record(topic, exc)
                else:
                    log.warning("skipped a bad record on %s: %s", message.topic(), exc)

    def _assign(self, timeout: float) -> bool:
        """Assign every partition of every topic from the beginning; False until Kafka answers."""
        consumer = Consumer(
            {
                **self.kafka_config,
                "bootstrap.servers": self.bootstrap,
                "group.id": f"tokentrail-follower-{uuid.uuid4().hex}",  # assign(): the group is never joined
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
                "topic.metadata.refresh.interval.ms": 10_000,
                "logger": kafka_logger("tokentrail.control.librdkafka"),
            }
        )
        partitions: list[TopicPartition] = []
        try:
            for topic in self.handlers:
                metadata = consumer.list_topics(topic, timeout=max(timeout, 1.0)).topics[topic]
                if metadata.error is not None:
                    raise KafkaException(metadata.error)
                partitions += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        except KafkaException as exc:
            consumer.close()
            log.debug("topics %s not readable yet: %s", list(self.handlers), exc)
            return False
        consumer.assign(partitions)
        self.last_contact = time.monotonic()
        self._pending = {(tp.topic, tp.partition) for tp in partitions}
        self._consumer = consumer
        if not self._pending:
            self.ready.set()
        return True

    def _reached_end(self, topic: str, partition: int) -> None:
        self._pending.discard((topic, partition))
        if not self._pending:
            self.ready.set()
