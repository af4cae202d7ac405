"""Kafka in and out of a dataflow, and the ticks that wake idle sink partitions.

Every flow reads Kafka through `kafka_source` and writes Kafka records (`Message`) through one
`KafkaOutSink` per process. Sink items are keyed by a number (a join bucket, a tick): the
partition of key `n` is `n` modulo the partition count, so one flow spreads its output over
`SINK_PARTITIONS` partitions whatever its workers.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage, _KafkaSourcePartition, _list_parts
from bytewax.inputs import DynamicSource, Source, StatelessSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, Producer
from confluent_kafka import Message as DeliveredMessage
from confluent_kafka.admin import AdminClient

from flows import metrics
from tokentrail.kafka_log import kafka_logger

log = logging.getLogger(__name__)

SINK_PARTITIONS = 4
"""Partitions of each sink, spread over workers (`-w`/`-p`). Fixed: a sink's recovery state
is kept per partition, so changing it needs a fresh recovery directory."""

KafkaMessage = KafkaSourceMessage[bytes | None, bytes | None]
"""A record read from Kafka (`kafka_source` raises on consumer errors, so only records arrive)."""

Record = DeliveredMessage
"""A record read from Kafka as librdkafka hands it over (`key()`, `value()`, `partition()`,
...): what `kafka_polls` emits, a poll at a time, without a Python object built per record."""

Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
"""A Kafka record to produce: (topic, key, value, headers)."""

Tick = tuple[str, None]
"""(sink partition number, None): wakes that partition so its age-based flush runs."""

# librdkafka prefetches up to 64 MB per partition by default; 8 MB keeps a 2,000-record poll
# fed at the flow's rate while bounding memory.
CONSUMER_CONFIG = {"fetch.wait.max.ms": "50", "queued.min.messages": "20000", "queued.max.messages.kbytes": "8192"}


def kafka_source(
    kafka: dict[str, str], topics: list[str], *, from_beginning: bool, batch_size: int
) -> Source[KafkaMessage]:
    """Records of `topics`; offsets live in the Bytewax recovery store, not a consumer group.
    `from_beginning` is where a flow without recovery state starts. `kafka`: bootstrap and
    security (`CoreSettings.kafka_client_config()`), for the consumers and the partition listing."""
    source = QuietKafkaSource(**_source_settings(kafka, topics, from_beginning, batch_size))
    return cast("Source[KafkaMessage]", source)  # raise_on_errors (the default): no KafkaError items


def kafka_polls(
    kafka: dict[str, str], topics: list[str], *, from_beginning: bool, batch_size: int
) -> Source[list[Record]]:
    """`kafka_source` a poll at a time: each item is the records one poll of one partition
    returned (up to `batch_size`), as librdkafka's own message objects. For flows whose
    first step takes records in bulk (the detect flow): measured, bytewax's per-record
    message objects and per-item hand-over cost 15-20% of that flow's CPU. Recovery state is
    the same as `kafka_source`'s (the next offset of each partition)."""
    return cast(
        "Source[list[Record]]", PolledKafkaSource(**_source_settings(kafka, topics, from_beginning, batch_size))
    )


def _source_settings(kafka: dict[str, str], topics: list[str], from_beginning: bool, batch_size: int) -> dict[str, Any]:
    return {
        "brokers": [kafka["bootstrap.servers"]],
        "topics": topics,
        "starting_offset": OFFSET_BEGINNING if from_beginning else OFFSET_END,
        "batch_size": batch_size,
        "add_config": {**kafka, **CONSUMER_CONFIG, "logger": kafka_logger("flows.librdkafka")},
    }


class QuietKafkaSource(KafkaSource):
    """bytewax 0.21.1's KafkaSource hands its consumer settings to the AdminClient that lists
    partitions too, and librdkafka warns once per consumer-only property there (six CONFWARN
    lines at every start). Listing partitions needs only the connection and its security
    (TLS/SASL). (bytewax is pinned; this is its `list_parts` without the consumer settings.)"""

    def list_parts(self) -> list[str]:
        config: dict[str, Any] = {key: value for key, value in self._add_config.items() if key not in CONSUMER_CONFIG}
        config["bootstrap.servers"] = ",".join(self._brokers)
        return list(_list_parts(AdminClient(config), self._topics))


class _PollPartition(_KafkaSourcePartition):
    """bytewax 0.21.1's partition, emitting each poll as one item (see `kafka_polls`)."""

    def next_batch(self) -> list[list[Record]]:  # type: ignore[override]
        records: list[Record] = self._consumer.consume(self._batch_size, 0.001)
        if not records:
            return []
        for record in records:
            error = record.error()
            if error is not None:  # the flow stops, as with bytewax's source (`raise_on_errors`)
                raise RuntimeError(f"error consuming from Kafka topic {self._topic!r}: {error}")
        self._offset = cast(int, records[-1].offset()) + 1  # a consumed record has an offset
        return [records]


class PolledKafkaSource(QuietKafkaSource):
    """`QuietKafkaSource` with `_PollPartition`s; the consumer settings are bytewax's own (a
    flow reads on at the end of a partition: no end-of-partition events)."""

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PollPartition:
        index, topic = for_part.split("-", 1)
        if topic not in self._topics:
            raise ValueError(f"recovery state names topic {topic!r}, not one of {self._topics}")
        config = {
            "group.id": "BYTEWAX_IGNORED",
            "enable.auto.commit": "false",
            "bootstrap.servers": ",".join(self._brokers),
            "enable.partition.eof": "false",
            "statistics.interval.ms": 1000,
            **self._add_config,
        }
        return _PollPartition(
            step_id, config, topic, int(index), self._starting_offset, resume_state, self._batch_size, True
        )


def part_names() -> list[str]:
    return [f"part-{index:02d}" for index in range(SINK_PARTITIONS)]


class NumberedParts:
    """Items are keyed by a number (join bucket or tick); a key's partition is that number,
    wrapped by the engine over the sorted partition list."""

    def list_parts(self) -> list[str]:
        return part_names()

    def part_fn(self, item_key: str) -> int:
        return int(item_key)


PERMANENT_PRODUCE_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError._INVALID_ARG,
    }
)
"""Errors about the record itself: producing it again can never succeed."""


def undeliverable(topic: str, key: bytes | None, size: int, error: KafkaError) -> None:
    """A record Kafka refuses for good (e.g. larger than the broker allows): logged with where it
    was going and counted, then dropped, so it never holds up the records behind it or stops
    the flow on every restart (docs/flows.md, "Dead letters")."""
    metrics.UNDELIVERABLE.labels(error.name()).inc()
    log.error("Kafka refused a %d-byte record for %s (key %r) for good, dropped: %s", size, topic, key, error)


class _KafkaPartition(StatefulSinkPartition[list[Message], None]):
    def __init__(self, producer: Producer, failures: list[str]) -> None:
        self.producer = producer
        self.failures = failures

    def write_batch(self, values: list[list[Message]]) -> None:
        produce = self.producer.produce
        for messages in values:
            for topic, key, payload, headers in messages:
                while True:
                    try:
                        produce(
                            topic, payload, key, headers=cast("list[tuple[str, str | bytes | None]]", headers) or None
                        )
                        break
                    except BufferError:  # local queue full: let the producer drain, then retry
                        self.producer.poll(0.05)
                    except KafkaException as exc:
                        error = exc.args[0]
                        if error.code() not in PERMANENT_PRODUCE_ERRORS:
                            raise
                        undeliverable(topic, key, len(payload or b""), error)
                        break
        self.producer.poll(0)

    def snapshot(self) -> None:
        self._flush()
        return None

    def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        while self.producer.flush(10.0):
            log.warning("Kafka producer still has undelivered records; waiting")
        if self.failures:
            raise RuntimeError(f"Kafka delivery failed: {self.failures[0]}")  # the epoch is not committed


class KafkaOutSink(NumberedParts, FixedPartitionedSink[list[Message], None]):
    """Kafka records (events, dead letters, alerts): produced asynchronously, flushed before
    each epoch commits (at-least-once). One producer per sink, shared by its partitions."""

    def __init__(self, kafka: dict[str, str]) -> None:
        self._kafka = kafka
        """Bootstrap and security (`CoreSettings.kafka_client_config()`)."""
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._failures: list[str] = []

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KafkaPartition:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(
                    {
                        **self._kafka,
                        "linger.ms": 5,
                        "compression.type": "lz4",
                        "enable.idempotence": True,
                        "queue.buffering.max.messages": 500_000,
                        "queue.buffering.max.kbytes": 65_536,  # back-pressure (BufferError) past 64 MB
                        "on_delivery": self._delivered,
                        "logger": kafka_logger("flows.librdkafka"),
                    }
                )
            return _KafkaPartition(self._producer, self._failures)

    def _delivered(self, error: KafkaError | None, message: DeliveredMessage) -> None:
        if error is None:
            return
        if error.code() in PERMANENT_PRODUCE_ERRORS:
            undeliverable(message.topic() or "", message.key(), len(message.value() or b""), error)
        else:
            self._failures.append(f"{message.topic()}: {error}")


class _TickPartition(StatelessSourcePartition[Tick]):
    def __init__(self, interval: timedelta, active: bool) -> None:
        self._interval = interval
        self._active = active
        self._next = datetime.now(UTC)

    def next_batch(self) -> list[Tick]:
        self._next = datetime.now(UTC) + self._interval
        return [(str(index), None) for index in range(SINK_PARTITIONS)] if self._active else []

    def next_awake(self) -> datetime:
        return self._next


class SinkTicks(DynamicSource[Tick]):
    """One tick per sink partition every `interval` (from worker 0 only), so a partition's
    age-based flush runs even when no new records arrive. The other workers' partitions emit
    nothing but wake at the same interval: one asleep (they slept a day) held every stateful
    step behind it, and `tokentrail flows -w 2` stopped after its first records
    (tests/test_detect_gateway_e2e.py runs with two workers)."""

    def __init__(self, interval: timedelta) -> None:
        self._interval = interval

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TickPartition:
        return _TickPartition(self._interval, worker_index == 0)
