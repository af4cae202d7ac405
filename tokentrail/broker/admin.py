"""Admin helpers any Kafka needs from us: wait until it answers, create and delete our topics.

They work on any cluster (the local broker or a real one), so the CLI, the demo and the tests
share them.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # untyped re-export

from tokentrail.settings import ConfigError, CoreSettings
from tokentrail.topics import TOPICS

DEFAULT_PARTITIONS = 3
"""Partitions per topic we create: more than one, so nothing silently relies on total order
(records are keyed by tenant or id, and order only holds per key)."""


def wait_ready(
    bootstrap: str,
    timeout: float = 30.0,
    alive: Callable[[], bool] = lambda: True,
    security: dict[str, str] | None = None,
) -> bool:
    """Poll until a broker answers a metadata request; False on timeout or once `alive()` is False.

    A plain TCP connect comes first, so librdkafka does not log a refused connection per poll.
    `security`: librdkafka TLS/SASL properties (`CoreSettings.kafka_client_config()`), here and below.
    """
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        if any(_accepts(address) for address in bootstrap.split(",")):
            try:
                metadata = _admin(bootstrap, security).list_topics(timeout=min(2.0, timeout))
                if metadata.brokers:
                    return True
            except KafkaException:
                pass
        time.sleep(0.1)
    return False


def ensure_topics(
    bootstrap: str,
    prefix: str = "",
    partitions: int = DEFAULT_PARTITIONS,
    timeout: float = 30.0,
    security: dict[str, str] | None = None,
) -> list[str]:
    """Create every topic of docs/architecture.md, Contracts (named `prefix + name`) that does not exist yet,
    with its cleanup policy, and wait until each one has a leader. Returns the names created."""
    admin = _admin(bootstrap, security)
    wanted = [
        NewTopic(f"{prefix}{spec.name}", num_partitions=partitions, replication_factor=1, config=spec.config())
        for spec in TOPICS
    ]
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_for_leaders(admin, [topic.topic for topic in wanted], timeout)
    return created


def bulk_producer(bootstrap: str) -> Producer:
    """A producer for loading many records at once (benchmarks): batched, compressed, with a
    queue deep enough that `produce_all` rarely waits."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def read_to_end(bootstrap: str, topic: str) -> Iterator[Message]:
    """Every record of `topic` from the beginning up to each partition's end as of the call, in
    order within each partition (benchmarks' end checks; not for a request path)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "tokentrail-read-to-end", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        read = dict.fromkeys(partitions, 0)
        while any(read[p] < ends[p] for p in partitions):
            for message in consumer.consume(10_000, 1.0):
                if message.error() is None:
                    read[cast(int, message.partition())] = cast(int, message.offset()) + 1  # a read record has both
                    yield message
    finally:
        consumer.close()


def produce_all(
    producer: Producer, topic: str, records: Iterable[tuple[bytes | None, bytes]], timeout: float = 60.0
) -> None:
    """Produce (key, value) records, waiting whenever the local queue is full, and flush.
    For loaders (tests, benchmarks), not for a request path."""
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(timeout):
        raise RuntimeError(f"{topic}: records still undelivered after {timeout:.0f} s")


def delete_topics(bootstrap: str, names: Iterable[str], timeout: float = 30.0) -> None:
    """Delete topics, ignoring ones that are already gone."""
    names = list(names)
    if not names:
        return
    admin = _admin(bootstrap)  # held until the futures resolve: a collected client cancels them
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        missing = [
            name
            for name in names
            if name not in topics
            or topics[name].error is not None
            or any(p.leader < 0 for p in topics[name].partitions.values())
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics have no leader after {timeout:.0f}s: {', '.join(missing)}")
        time.sleep(0.05)


def _admin(bootstrap: str, security: dict[str, str] | None = None) -> AdminClient:
    return AdminClient({**(security or {}), "bootstrap.servers": bootstrap})


def require_credentials(core: CoreSettings) -> None:
    """ConfigError (one line) when SASL is configured and the brokers refuse our credentials;
    an unreachable Kafka is not an error here (the gateway spools, the flows wait)."""
    refused = check_credentials(core.kafka_client_config())
    if refused is not None:
        raise ConfigError(
            f"Kafka at {core.bootstrap()} refused TOKENTRAIL_KAFKA_SASL_USERNAME={core.kafka_sasl_username!r} "
            f"({core.kafka_sasl_mechanism}): {refused}"
        )


def check_credentials(kafka: dict[str, str], timeout: float = 10.0) -> str | None:
    """With SASL configured: None if the brokers accept our credentials or cannot be reached
    (an outage is not a configuration error), else librdkafka's one-line reason for refusing them."""
    if not kafka.get("security.protocol", "PLAINTEXT").startswith("SASL"):
        return None
    refused: list[str] = []

    def on_error(error: KafkaError) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            refused.append(error.str())

    config: dict[str, Any] = {**kafka, "error_cb": on_error, "log_level": 0}
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    while not refused and time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return None
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError._AUTHENTICATION:
                refused.append(exc.args[0].str())
        admin.poll(0.1)
    return refused[0] if refused else None


def _accepts(address: str) -> bool:
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False
