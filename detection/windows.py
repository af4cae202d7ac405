"""Trailing-window sums over event time in a ring of buckets: O(buckets) memory per window,
O(1) per add, O(1) amortized per read, exact to one bucket (a window of W seconds in B
buckets sums the events of the last W - W/B to W seconds).

Each bucket carries the absolute number of the interval it holds (its stamp), so a bucket
left over from an older lap of the ring is recognized and reset when it is reused, and
ignored when summed: nothing is cleared eagerly, which keeps a sparse scope (one call every
few minutes) as cheap as a busy one. A read sums the complete buckets once per bucket
interval (cached) and adds the current bucket live.
"""

from __future__ import annotations

from array import array

_NEVER = -(1 << 62)


class SlidingSums:
    """Sums of `width` counters over the trailing `window` seconds."""

    __slots__ = ("window", "bucket_seconds", "buckets", "width", "cells", "stamps", "head", "cached_for", "cached")

    def __init__(self, window: float, width: int, buckets: int = 60) -> None:
        self.window = window
        self.bucket_seconds = window / buckets
        self.buckets = buckets
        self.width = width
        self.cells = array("d", bytes(8 * buckets * width))
        self.stamps = array("q", [_NEVER]) * buckets
        self.head = _NEVER
        """Absolute number of the newest bucket: the window ends there."""
        self.cached_for = _NEVER
        self.cached: list[float] = [0.0] * width
        """Sums of the window's buckets before `head`, valid while `cached_for == head`."""

    def advance(self, at: float) -> None:
        """Move the window's end to `at` (never backwards)."""
        bucket = int(at // self.bucket_seconds)
        if bucket > self.head:
            self.head = bucket

    def add(self, at: float, values: tuple[float, ...]) -> bool:
        """Count `values` at event time `at`; False (nothing counted) when `at` is older than
        the window ending at the newest event."""
        bucket = int(at // self.bucket_seconds)
        head = self.head
        if bucket > head:
            self.head = bucket
        elif bucket < head:
            if bucket <= head - self.buckets:
                return False
            self.cached_for = _NEVER  # a late event changes a complete bucket
        slot = bucket % self.buckets
        cells = self.cells
        if self.width == 1:
            if self.stamps[slot] != bucket:
                self.stamps[slot] = bucket
                cells[slot] = values[0]
            else:
                cells[slot] += values[0]
            return True
        base = slot * self.width
        if self.stamps[slot] != bucket:
            self.stamps[slot] = bucket
            cells[base : base + self.width] = array("d", values)
        else:
            for column, value in enumerate(values):
                cells[base + column] += value
        return True

    @property
    def sums(self) -> list[float]:
        """The counters summed over the window ending at `head`."""
        head, width, cells, stamps = self.head, self.width, self.cells, self.stamps
        if self.cached_for != head:
            cached = [0.0] * width
            oldest = head - self.buckets
            for slot in range(self.buckets):
                stamp = stamps[slot]
                if oldest < stamp < head:
                    base = slot * width
                    for column in range(width):
                        cached[column] += cells[base + column]
            self.cached, self.cached_for = cached, head
        slot = head % self.buckets
        if stamps[slot] != head:
            return list(self.cached)
        base = slot * width
        return [self.cached[column] + cells[base + column] for column in range(width)]

    def snapshot(self) -> tuple[float, int, int, int, bytes, bytes]:
        return (self.window, self.width, self.buckets, self.head, self.cells.tobytes(), self.stamps.tobytes())

    @classmethod
    def restore(cls, state: tuple[float, int, int, int, bytes, bytes]) -> SlidingSums:
        window, width, buckets, head, cells, stamps = state
        ring = cls(window, width, buckets)
        ring.head = head
        ring.cells = array("d")
        ring.cells.frombytes(cells)
        ring.stamps = array("q")
        ring.stamps.frombytes(stamps)
        return ring


class MultiWindow:
    """The same counters over several window lengths (one ring each).

    Adds go to a pending bucket of the finest ring's width, folded into every ring when time
    moves past it (or before a read), so an event costs a few additions, not one per ring.
    Exact because every ring's bucket width is a multiple of the finest one (otherwise adds
    go straight to the rings)."""

    __slots__ = ("rings", "fine", "pending_bucket", "pending")

    def __init__(self, windows: tuple[float, ...], width: int, buckets: int = 60) -> None:
        self.rings = {window: SlidingSums(window, width, buckets) for window in windows}
        fine = min(ring.bucket_seconds for ring in self.rings.values())
        aligned = all(float(ring.bucket_seconds / fine).is_integer() for ring in self.rings.values())
        self.fine = fine if aligned else 0.0
        self.pending_bucket = -(1 << 62)
        self.pending = [0.0] * width

    def add(self, at: float, values: tuple[float, ...]) -> None:
        if self.fine:
            bucket = int(at // self.fine)
            if bucket == self.pending_bucket:
                pending = self.pending
                for column, value in enumerate(values):
                    pending[column] += value
                return
            if bucket > self.pending_bucket:
                self.flush()
                self.pending_bucket = bucket
                self.pending = list(values)
                return
        for ring in self.rings.values():
            ring.add(at, values)

    def flush(self) -> None:
        """Fold the pending bucket into the rings."""
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
        """Sums over `window` ending at the newest event (call `advance` to move the end)."""
        self.flush()
        return self.rings[window].sums
