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
    """The same counters over several window lengths (one ring each)."""

    __slots__ = ("rings",)

    def __init__(self, windows: tuple[float, ...], width: int, buckets: int = 60) -> None:
        self.rings = {window: SlidingSums(window, width, buckets) for window in windows}

    def add(self, at: float, values: tuple[float, ...]) -> None:
        for ring in self.rings.values():
            ring.add(at, values)

    def advance(self, at: float) -> None:
        for ring in self.rings.values():
            ring.advance(at)

    def sums(self, window: float) -> list[float]:
        return self.rings[window].sums
