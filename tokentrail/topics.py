"""Kafka topics of docs/architecture.md, Contracts: names, keys and cleanup policies in one place."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    compacted: bool
    retention_ms: int | None = None

    def config(self) -> dict[str, str]:
        """Broker topic config; compacted topics keep the latest record per key forever."""
        if self.compacted:
            return {"cleanup.policy": "compact"}
        config = {"cleanup.policy": "delete"}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config


SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000

CALLS_RAW = "tokentrail.calls.raw"
EVENTS = "tokentrail.events"
IDENTITIES = "tokentrail.identities"
CONTROLS = "tokentrail.controls"
ALERTS = "tokentrail.alerts"
DLQ = "tokentrail.dlq"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(CALLS_RAW, compacted=False, retention_ms=SEVEN_DAYS_MS),
    TopicSpec(EVENTS, compacted=False),
    TopicSpec(IDENTITIES, compacted=True),
    TopicSpec(CONTROLS, compacted=True),
    TopicSpec(ALERTS, compacted=False),
    TopicSpec(DLQ, compacted=False),
)


def with_prefix(prefix: str) -> dict[str, str]:
    """Logical name -> physical name, so tests can give each test its own set of topics."""
    return {spec.name: f"{prefix}{spec.name}" for spec in TOPICS}
