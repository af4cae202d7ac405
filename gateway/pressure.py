"""Resource bounds of one gateway process (docs/gateway.md, "Resource bounds"): how many
requests and how many request-body bytes may be in flight at once, and how often a source
that fails authentication becomes an event. Plain counters, no aiohttp.
"""

from __future__ import annotations

OVERFLOW_SOURCE = "*"
"""Where failed attempts of sources beyond the table's size are counted together."""


class InFlight:
    """Requests being handled and the request-body bytes they may hold. A request that would
    go over either bound is refused (503 with Retry-After) before its body is read; a body of
    unknown length (chunked) is counted at the body limit."""

    __slots__ = ("max_requests", "max_body_bytes", "requests", "body_bytes")

    def __init__(self, max_requests: int, max_body_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_body_bytes = max_body_bytes
        self.requests = 0
        self.body_bytes = 0

    def enter(self, body_bytes: int) -> bool:
        if self.requests >= self.max_requests or (self.body_bytes + body_bytes > self.max_body_bytes and self.requests):
            return False
        self.requests += 1
        self.body_bytes += body_bytes
        return True

    def leave(self, body_bytes: int) -> None:
        self.requests -= 1
        self.body_bytes -= body_bytes


class FailedAuthentication:
    """At most one `unauthorized_access_attempt` event per source per interval: the first
    failure of a source in an interval is reported with the count of that source's failures
    since its previous event; the others are only counted (and in the denied counter). The
    table holds at most `max_sources`; past that, expired entries are dropped, and failures of
    new sources while it is still full are aggregated under `OVERFLOW_SOURCE`."""

    __slots__ = ("interval_s", "max_sources", "_sources")

    def __init__(self, interval_s: float, max_sources: int = 10_000) -> None:
        self.interval_s = interval_s
        self.max_sources = max_sources
        self._sources: dict[str, list[float]] = {}
        """source -> [time of its last event, failures since then (not yet in an event)]"""

    def failed(self, source: str | None, now: float) -> tuple[str, int] | None:
        """(source as recorded, failures the event reports) when this failure is to become an
        event, else None. `now` is a monotonic clock reading."""
        key = source or "unknown"
        entry = self._sources.get(key)
        if entry is None:
            if len(self._sources) >= self.max_sources:
                self._expire(now)
            if len(self._sources) >= self.max_sources:
                key = OVERFLOW_SOURCE
                entry = self._sources.get(key)
        if entry is None:
            self._sources[key] = [now, 0]
            return key, 1
        if now - entry[0] >= self.interval_s:
            attempts = int(entry[1]) + 1
            entry[0], entry[1] = now, 0
            return key, attempts
        entry[1] += 1
        return None

    def _expire(self, now: float) -> None:
        """Drop the sources whose interval is over and which failed nothing since their event
        (nothing would be lost)."""
        self._sources = {
            source: entry for source, entry in self._sources.items() if now - entry[0] < self.interval_s or entry[1]
        }

    def __len__(self) -> int:
        return len(self._sources)
