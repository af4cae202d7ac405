"""Prometheus metrics of the flows (served on `/metrics` by `tokentrail flows`)."""

from prometheus_client import Counter, Gauge, Histogram

RECORDS_IN = Counter("tokentrail_flows_records_total", "Records read, by topic kind", ["source"])
REJECTED = Counter("tokentrail_flows_rejected_total", "Records sent to the dead-letter topic, by reason", ["reason"])
ROWS_WRITTEN = Counter("tokentrail_flows_rows_written_total", "Rows inserted into ClickHouse", ["table"])
UNDELIVERABLE = Counter(
    "tokentrail_flows_undeliverable_total",
    "Records Kafka refused for good (too large, invalid): logged and dropped, never retried",
    ["error"],
)
FLUSH_SECONDS = Histogram(
    "tokentrail_flows_flush_seconds",
    "Latency of one sink flush (dedup + INSERT)",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FLUSH_FAILURES = Counter("tokentrail_flows_flush_failures_total", "Failed sink flushes (retried)", ["table"])
DUPLICATES = Counter(
    "tokentrail_flows_duplicates_dropped_total",
    "Rows not written because storage (or the same batch) already held their id",
    ["table"],
)
IDENTITIES = Gauge("tokentrail_flows_identities", "Identities held in the join state")


REASON_KINDS = ("empty record", "invalid JSON", "schema", "signature", "identity", "control")
"""Every label value of `tokentrail_flows_rejected_total`, plus `other`."""


def reason_label(reason: str) -> str:
    """The kind of a rejection, from a fixed set: a reason names the record (an identity's key
    id, a control's scope), which must never become a label (one series per bad record)."""
    for kind in REASON_KINDS:
        if reason.startswith(kind):
            return kind
    return "other"


def record_flush(table: str, rows: int, seconds: float) -> None:
    ROWS_WRITTEN.labels(table).inc(rows)
    FLUSH_SECONDS.labels(table).observe(seconds)


def record_flush_failure(table: str, exc: Exception) -> None:
    FLUSH_FAILURES.labels(table).inc()
