"""Prometheus metrics of one gateway process, in a registry of its own (one per app).

Label children are bound once and cached, so recording a request is a dict lookup and a
few additions.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "tokentrail_gateway_requests",
            "Requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self._latency = Histogram(
            "tokentrail_gateway_request_duration_seconds",
            "Time from request to the end of the answer",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._first_byte = Histogram(
            "tokentrail_gateway_time_to_first_byte_seconds",
            "Time from request to the upstream's first byte",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._upstream_errors = Counter(
            "tokentrail_gateway_upstream_errors",
            "Upstream failures (unreachable, timeout, disconnected, 5xx)",
            ["provider", "kind"],
            registry=r,
        )
        self._decisions = Counter(
            "tokentrail_gateway_denied", "Requests refused before reaching the upstream", ["reason"], registry=r
        )
        self._control_refused = Counter(
            "tokentrail_gateway_control_records_refused",
            "Identity and control records refused (bad or missing operator signature, malformed, tombstone)",
            ["topic", "reason"],
            registry=r,
        )
        self.kafka_delivery_failures = Counter(
            "tokentrail_gateway_kafka_delivery_failures",
            "Records Kafka did not acknowledge (they went to the spool)",
            registry=r,
        )
        self.records_spooled = Counter("tokentrail_gateway_records_spooled", "Records written to the spool", registry=r)
        self.records_drained = Counter(
            "tokentrail_gateway_records_drained", "Spooled records sent to Kafka after it came back", registry=r
        )
        self.records_redelivered = Counter(
            "tokentrail_gateway_records_redelivered",
            "Records sent again that Kafka may already hold (marked tokentrail-redelivery)",
            registry=r,
        )
        self.records_quarantined = Counter(
            "tokentrail_gateway_records_quarantined",
            "Records Kafka refused for good (too large, invalid), kept in the spool's quarantine file",
            registry=r,
        )
        self.records_lost = Counter(
            "tokentrail_gateway_records_lost",
            "Records neither Kafka nor the spool took (the spool was full or the disk refused them)",
            registry=r,
        )
        self.spool_write_failures = Counter(
            "tokentrail_gateway_spool_write_failures",
            "Records not written ahead: the spool was at TOKENTRAIL_SPOOL_MAX_BYTES or the disk refused the write",
            registry=r,
        )
        self.spool_corrupt_frames = Counter(
            "tokentrail_gateway_spool_corrupt_frames",
            "Damaged stretches of the spool skipped while reading it",
            registry=r,
        )
        self._spool_records = Gauge(
            "tokentrail_gateway_spool_records",
            "Records in the write-ahead log not yet acknowledged by Kafka",
            registry=r,
        )
        self._spool_bytes = Gauge("tokentrail_gateway_spool_bytes", "Bytes of the write-ahead log on disk", registry=r)
        self._registry_keys = Gauge("tokentrail_gateway_registry_keys", "Keys in the identity registry", registry=r)
        self._kafka_unacknowledged = Gauge(
            "tokentrail_gateway_kafka_unacknowledged",
            "Records handed to the Kafka producer and not yet acknowledged (what a SIGKILL would lose)",
            registry=r,
        )
        self._children: dict[tuple[str, int], tuple[Counter, Histogram, Histogram]] = {}

    def watch(
        self,
        spool_records: Callable[[], float],
        spool_bytes: Callable[[], float],
        registry_keys: Callable[[], float],
        kafka_unacknowledged: Callable[[], float],
    ) -> None:
        self._spool_records.set_function(spool_records)
        self._spool_bytes.set_function(spool_bytes)
        self._registry_keys.set_function(registry_keys)
        self._kafka_unacknowledged.set_function(kafka_unacknowledged)

    def request(self, endpoint: str, status: int, seconds: float, first_byte_seconds: float | None) -> None:
        children = self._children.get((endpoint, status))
        if children is None:
            children = self._children[(endpoint, status)] = (
                self._requests.labels(endpoint, str(status)),
                self._latency.labels(endpoint),
                self._first_byte.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)
        if first_byte_seconds is not None:
            children[2].observe(first_byte_seconds)

    def upstream_error(self, provider: str, kind: str) -> None:
        self._upstream_errors.labels(provider, kind).inc()

    def control_record_refused(self, topic: str, reason: str) -> None:
        """Labels are bounded: topic `identities`/`controls`, reason a `RecordError.kind`."""
        self._control_refused.labels(topic, reason).inc()

    def denied(self, reason: str) -> None:
        self._decisions.labels(reason).inc()
