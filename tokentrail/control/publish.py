"""Write identity and control records to their compacted topics, waiting for the broker's ack."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Producer

from tokentrail.errors import TokentrailError
from tokentrail.kafka_log import kafka_logger


class PublishError(TokentrailError):
    """The record was not acknowledged by Kafka; the message says why."""


def publish(kafka: dict[str, Any], topic: str, key: str, value: bytes | None, timeout: float = 10.0) -> None:
    """Produce one record and wait for its acknowledgement (acks=all, idempotent). `kafka` is
    the client configuration (`CoreSettings.kafka_client_config()`: bootstrap and security)."""
    bootstrap = kafka["bootstrap.servers"]
    producer = Producer(
        {
            **kafka,
            "enable.idempotence": True,
            "message.timeout.ms": int(timeout * 1000),
            "logger": kafka_logger("tokentrail.control.librdkafka"),
        }
    )
    errors: list[KafkaError] = []
    producer.produce(topic, value, key.encode(), on_delivery=lambda err, _msg: errors.append(err) if err else None)
    if producer.flush(timeout + 1.0) > 0:
        raise PublishError(f"Kafka at {bootstrap} did not acknowledge the record on {topic} within {timeout:.0f}s")
    if errors:
        raise PublishError(f"Kafka refused the record on {topic}: {errors[0].str()}")
