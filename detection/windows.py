"""Trailing-window sums over event time in a ring of buckets: O(buckets) memory per window,
O(1) amortized per add, exact to one bucket (a window of W seconds in B buckets sums the
events of the last W to W + W/B seconds)."""

from __future__ import annotations

from array import array


class SlidingSums:
    """Sums of `width` counters over the trailing `window` seconds."""

    __slots__ = ("window", "bucket_seconds", "buckets", "width", "cells", "sums", "head")

    def __init__(self, window: float, width: int, buckets: int = 60) -> None:
        self.window = window
        self.bucket_seconds = window / buckets
        self.buckets = buckets
        self.width = width
        self.cells = array("d", bytes(8 * buckets * width))
        self.sums = [0.0] * width
        self.head = -(1 << 62)
        """Absolute number of the newest bucket."""

    def advance(self, at: float) -> None:
        """Move the window's end to `at` (never backwards), dropping buckets that left it."""
        bucket = int(at // self.bucket_seconds)
        if bucket <= self.head:
            return
        cells, sums, width, buckets = self.cells, self.sums, self.width, self.buckets
        start = max(self.head + 1, bucket - buckets + 1)
        for number in range(start, bucket + 1):
            base = (number % buckets) * width
            for column in range(width):
                sums[column] -= cells[base + column]
                cells[base + column] = 0.0
        if bucket - self.head >= buckets:  # everything left: clear rounding residue too
            self.sums = [0.0] * width
        self.head = bucket

    def add(self, at: float, values: tuple[float, ...]) -> bool:
        """Count `values` at event time `at`; False (nothing counted) when `at` is older than
        the ring holds."""
        bucket = int(at // self.bucket_seconds)
        if bucket > self.head:
            self.advance(at)
        elif bucket <= self.head - self.buckets:
            return False
        base = (bucket % self.buckets) * self.width
        cells, sums = self.cells, self.sums
        for column, value in enumerate(values):
            cells[base + column] += value
            sums[column] += value
        return True

    def snapshot(self) -> tuple[float, int, int, int, bytes]:
        return (self.window, self.width, self.buckets, self.head, self.cells.tobytes())

    @classmethod
    def restore(cls, state: tuple[float, int, int, int, bytes]) -> SlidingSums:
        window, width, buckets, head, cells = state
        ring = cls(window, width, buckets)
        ring.head = head
        ring.cells = array("d")
        ring.cells.frombytes(cells)
        ring.sums = [sum(ring.cells[column::width]) for column in range(width)]
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
