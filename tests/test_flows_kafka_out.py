"""The flows' Kafka sink on the real broker: a record Kafka refuses for good (larger than the
broker allows) is counted and dropped, and the records behind it are delivered; the epoch
still commits (no exception from the flush), so the flow never crash-loops on it."""

from __future__ import annotations

import pytest

from flows import metrics
from flows.connectors import KafkaOutSink
from tests.fixtures.kafka import consume_all
from tokentrail import topics

pytestmark = pytest.mark.kafka


def test_a_record_too_large_for_kafka_is_dropped_and_the_ones_behind_it_are_delivered(kafka_topics):
    dlq = kafka_topics.name(topics.DLQ)
    sink = KafkaOutSink({"bootstrap.servers": kafka_topics.bootstrap})
    part = sink.build_part("out", "0", None)
    before = metrics.UNDELIVERABLE.labels("MSG_SIZE_TOO_LARGE")._value.get()
    too_large = (dlq, b"mallory", b"x" * 2_000_000, [])
    good = [(dlq, b"acme", f"letter {n}".encode(), []) for n in range(20)]
    part.write_batch([[good[0], too_large, *good[1:]]])
    part.snapshot()  # flushes; raises if a delivery failed
    part.close()
    assert metrics.UNDELIVERABLE.labels("MSG_SIZE_TOO_LARGE")._value.get() == before + 1
    delivered = consume_all(kafka_topics.bootstrap, dlq, expected=20, timeout=20)
    assert sorted(m.value() for m in delivered) == sorted(value for _, _, value, _ in good)
