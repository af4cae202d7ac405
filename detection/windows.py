"""Trailing-window sums over event time in rings of buckets.

Every window length is served by a ring of equal buckets: windows up to 360 buckets of the
fine width (1 minute for the default windows: 5 m, 30 m, 1 h, 6 h) share one ring, longer ones
(3 d) get a ring of coarser buckets (1 hour). A window's sum is exact to one bucket: it covers
the last W - bucket to W seconds. The default rules therefore cost two rings per scope, and
an event two additions (usually one: adds collect in a pending bucket of the fine width
first).

Each bucket carries the absolute number of the interval it holds (its stamp), so a bucket
left over from an older lap of the ring is recognized and reset when reused and ignored when
summed: nothing is cleared eagerly, which keeps a sparse scope (a call every few minutes) as
cheap as a busy one. Reads use running sums over the complete buckets, rebuilt once per
bucket interval, plus the current bucket: O(1) amortized.
"""

from __future__ import annotations

from array import array

_NEVER = -(1 << 62)
MAX_FINE_BUCKETS = 360
COARSE_BUCKETS = 72


class SlidingSums:
    """`width` counters in `buckets` buckets of `bucket_seconds`; sums over the last k buckets."""

    __slots__ = ("bucket_seconds", "buckets", "width", "cells", "stamps", "head", "cached_for", "behind")

    def __init__(self, bucket_seconds: float, buckets: int, width: int) -> None:
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self.width = width
        self.cells = array("d", bytes(8 * buckets * width))
        self.stamps = array("q", [_NEVER]) * buckets
        self.head = _NEVER
        """Absolute number of the newest bucket: windows end there."""
        self.cached_for = _NEVER
        self.behind: list[list[float]] = []
        """behind[j]: sums of the j + 1 complete buckets before `head`, valid while `cached_for == head`."""

    def advance(self, at: float) -> None:
        """Move the end of the windows to `at` (never backwards)."""
        bucket = int(at // self.bucket_seconds)
        if bucket > self.head:
            self.head = bucket

    def add(self, at: float, values: tuple[float, ...]) -> bool:
        """Count `values` at event time `at`; False (nothing counted) when `at` is older than the ring."""
        bucket = int(at // self.bucket_seconds)
        head = self.head
        if bucket > head:
            self.head = bucket
        elif bucket < head:
            if bucket <= head - self.buckets:
                return False
            self.cached_for = _NEVER  # a late event changes a complete bucket
        slot = bucket % self.buckets
        cells, width = self.cells, self.width
        base = slot * width
        if self.stamps[slot] != bucket:
            self.stamps[slot] = bucket
            for column in range(width):
                cells[base + column] = values[column]
        else:
            for column in range(width):
                cells[base + column] += values[column]
        return True

    def sums(self, count: int) -> list[float]:
        """The counters summed over the last `count` buckets (the current one included)."""
        head, width, cells, stamps, buckets = self.head, self.width, self.cells, self.stamps, self.buckets
        if self.cached_for != head:
            behind: list[list[float]] = []
            running = [0.0] * width
            for back in range(1, buckets):
                number = head - back
                slot = number % buckets
                if stamps[slot] == number:
                    base = slot * width
                    running = [running[column] + cells[base + column] for column in range(width)]
                behind.append(running)
            self.behind, self.cached_for = behind, head
        total = list(self.behind[count - 2]) if count >= 2 else [0.0] * width
        slot = head % buckets
        if stamps[slot] == head:
            base = slot * width
            for column in range(width):
                total[column] += cells[base + column]
        return total


class MultiWindow:
    """The same counters over several window lengths (module docstring)."""

    __slots__ = ("rings", "spans", "fine", "pending_bucket", "pending")

    def __init__(self, windows: tuple[float, ...], width: int) -> None:
        self.fine = min(60.0, min(windows) / 5)
        plan: dict[float, float] = {}  # bucket width -> longest window it serves
        self.spans: dict[float, tuple[float, int]] = {}  # window -> (bucket width, buckets)
        for window in windows:
            if window / self.fine <= MAX_FINE_BUCKETS:
                bucket = self.fine
            else:
                bucket = max(self.fine, (window / COARSE_BUCKETS) // self.fine * self.fine)
            plan[bucket] = max(plan.get(bucket, 0.0), window)
            self.spans[window] = (bucket, max(1, round(window / bucket)))
        self.rings = {
            bucket: SlidingSums(bucket, round(longest / bucket) + 1, width) for bucket, longest in plan.items()
        }
        self.pending_bucket = _NEVER
        self.pending = [0.0] * width

    def add(self, at: float, values: tuple[float, ...]) -> None:
        """Count `values` at `at`: into the pending fine bucket while time stays in it."""
        bucket = int(at // self.fine)
        if bucket == self.pending_bucket:
            pending = self.pending
            for column in range(len(pending)):
                pending[column] += values[column]
        elif bucket > self.pending_bucket:
            self.flush()
            self.pending_bucket = bucket
            self.pending = list(values)
        else:
            for ring in self.rings.values():
                ring.add(at, values)

    def flush(self) -> None:
        """Fold the pending bucket into the rings (every ring's bucket width is a multiple of it)."""
        if any(self.pending):
            at = self.pending_bucket * self.fine
            values = tuple(self.pending)
            for ring in self.rings.values():
                ring.add(at, values)
            self.pending = [0.0] * len(self.pending)

    def advance(self, at: float) -> None:
        self.flush()
        for ring in self.rings.values():
            ring.advance(at)

    def sums(self, window: float) -> list[float]:
        """Sums over `window` ending at the newest event (`advance` moves the end)."""
        self.flush()
        bucket, count = self.spans[window]
        return self.rings[bucket].sums(count)
