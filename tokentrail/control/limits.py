"""Per-identity token buckets for requests and LLM tokens per minute (time injected).

Each limit is a bucket holding one minute's worth (the burst) and refilling continuously.
A request takes one request token when it is admitted; LLM tokens are only known after the
response, so they are taken then and may drive the bucket below zero: the identity is then
refused until the debt is refilled. Buckets are local to one gateway replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tokentrail.control.registry import RateLimits


@dataclass(slots=True)
class Bucket:
    capacity: float
    level: float
    updated: float

    def refill(self, capacity: float, now: float) -> None:
        """Top up by elapsed time; a changed limit takes effect at once (level clamped to it)."""
        rate = capacity / 60.0
        self.level = min(capacity, self.level + (now - self.updated) * rate)
        self.capacity = capacity
        self.updated = now

    def seconds_until(self, level: float) -> float:
        """Time until the bucket holds `level`, at the current rate."""
        missing = level - self.level
        return 0.0 if missing <= 0 else missing / (self.capacity / 60.0)


class RateLimiter:
    def __init__(self) -> None:
        self._requests: dict[str, Bucket] = {}
        self._tokens: dict[str, Bucket] = {}

    def admit(self, identity: str, limits: RateLimits, now: float) -> int:
        """0 if the request may go on (its request token is taken), else Retry-After seconds (>= 1)."""
        requests = self._bucket(self._requests, identity, limits.requests_per_minute, now)
        tokens = self._bucket(self._tokens, identity, limits.tokens_per_minute, now)
        wait = 0.0
        if requests is not None:
            wait = requests.seconds_until(1.0)
        if tokens is not None and tokens.level <= 0:
            # Admit again once the debt is paid and at least one token is back.
            wait = max(wait, tokens.seconds_until(1.0))
        if wait > 0:
            return max(1, math.ceil(wait))
        if requests is not None:
            requests.level -= 1.0
        return 0

    def spend_tokens(self, identity: str, limits: RateLimits, count: int, now: float) -> None:
        """Charge the LLM tokens a finished call used."""
        tokens = self._bucket(self._tokens, identity, limits.tokens_per_minute, now)
        if tokens is not None and count > 0:
            tokens.level -= count

    @staticmethod
    def _bucket(table: dict[str, Bucket], identity: str, per_minute: int | None, now: float) -> Bucket | None:
        if per_minute is None:
            table.pop(identity, None)
            return None
        bucket = table.get(identity)
        if bucket is None:
            bucket = table[identity] = Bucket(float(per_minute), float(per_minute), now)
        else:
            bucket.refill(float(per_minute), now)
        return bucket
