"""Prometheus metrics of alert delivery, labelled by receiver (`alertmanager`, `webhook`)."""

from prometheus_client import Counter, Gauge

DELIVERED = Counter("tokentrail_alerts_delivered_total", "Alert states a receiver accepted", ["receiver"])
FAILED = Counter(
    "tokentrail_alerts_failed_total",
    "Alert states in a failed delivery attempt (retried unless rejected)",
    ["receiver"],
)
REJECTED = Counter(
    "tokentrail_alerts_rejected_total", "Alert states a receiver refused with a 4xx (not retried)", ["receiver"]
)
DROPPED = Counter(
    "tokentrail_alerts_dropped_total", "Alert states dropped because too many fingerprints were pending", ["receiver"]
)
PENDING = Gauge("tokentrail_alerts_pending", "Alert fingerprints waiting for delivery", ["receiver"])
