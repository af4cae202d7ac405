"""librdkafka's own log lines, routed through our logging with sensible levels and a rate limit.

librdkafka logs every failed connection attempt, every retry of a producer id, every
disconnect: with Kafka unreachable that is hundreds of lines a minute, and on a normal start
against a broker still loading its coordinators it warns "Failed to acquire idempotence PID"
before succeeding a moment later. What the operator needs from it is "Kafka is not reachable"
once in a while; the consequences (spooling, a command that fails) are reported by our own
code. So:

- a broker that is away (connection refused, all brokers down) is logged at INFO, at most
  once per RATE_LIMIT_S per kind, with the number suppressed; a broker still starting
  (coordinator loading, producer id retries) at DEBUG;
- everything else keeps librdkafka's level, rate-limited the same way;
- a process without configured logging (the CLI) prints none of it: its commands report
  the outcome themselves, in one line.

Pass `kafka_logger("tokentrail.gateway.librdkafka")` as a client's `logger` setting.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

RATE_LIMIT_S = 30.0
"""At most one line per kind of message in this many seconds."""
TRANSIENT_MARKS = (
    "Connection refused",
    "Connect to ",
    "all brokers are down",
    "broker connections are down",
    "Disconnected",
    "Timed out",
    "timed out",
)
"""Parts of librdkafka messages about a broker that is away: INFO, rate-limited."""
STARTING_MARKS = ("idempotence PID", "Coordinator load in progress")
"""Parts of librdkafka messages about a broker still starting, which librdkafka retries and
gets past within seconds on every normal start: DEBUG."""


class KafkaLogger:
    """The object librdkafka (confluent-kafka's `logger` setting) calls as
    `log(level, "%s [%s] %s", facility, client name, message)`."""

    def __init__(self, name: str, rate_limit_s: float = RATE_LIMIT_S) -> None:
        self.logger = logging.getLogger(name)
        self.rate_limit_s = rate_limit_s
        self._lock = threading.Lock()
        self._last: dict[tuple[str, bool], tuple[float, int]] = {}

    def log(self, level: int, fmt: str, *args: Any) -> None:
        text = fmt % args if args else fmt
        facility = str(args[0]) if args else ""
        transient = any(mark in text for mark in TRANSIENT_MARKS)
        if transient:
            level = min(level, logging.INFO)
        elif any(mark in text for mark in STARTING_MARKS):
            transient, level = True, logging.DEBUG
        if not self.logger.isEnabledFor(level):
            return
        key = (facility, transient)
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (-self.rate_limit_s, 0))
            if now - last < self.rate_limit_s:
                self._last[key] = (last, suppressed + 1)
                return
            self._last[key] = (now, 0)
        note = f" ({suppressed} similar lines suppressed in the last {self.rate_limit_s:.0f} s)" if suppressed else ""
        what = "Kafka not reachable or not ready yet, retrying" if transient else "Kafka client"
        self.logger.log(level, "%s: %s%s", what, text, note)


_loggers: dict[str, KafkaLogger] = {}
_loggers_lock = threading.Lock()


def kafka_logger(name: str) -> KafkaLogger:
    """The KafkaLogger of `name`, shared by every client that logs under it (one rate limit
    for all, e.g. the consumers a follower creates while Kafka is away)."""
    with _loggers_lock:
        return _loggers.setdefault(name, KafkaLogger(name))
