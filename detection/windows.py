"""Trailing-window sums over event time in rings of buckets.

Every window length is served by a ring of equal buckets: windows up to 360 buckets of the
fine width (1 minute for the default windows: 5 m, 30 m, 1 h, 6 h) share one ring, longer ones
(3 d) get a ring of coarser buckets (1 hour). A window's sum is exact to one bucket: it covers
the last W - bucket to W seconds. The default rules therefore cost two rings per scope, and
an event two additions (usually one: adds collect in a pending bucket of the fine width
first).

A ring holds running totals, not counts: the cell of bucket n holds everything counted in
buckets up to n, so the sum over the last k buckets is two reads, total(head) - total(head - k),
whatever k. Moving the end of the windows to a new bucket copies the last total into the
buckets passed (at most one lap of the ring; nothing else is cleared), and an event adds to
its bucket's total (a late event also to the totals of the buckets after it). Each bucket
carries the absolute number of the interval it holds (its stamp), so a bucket from before
the first event or an older lap is never read as current. An empty window reads exactly zero:
both of its ends hold the same copied total.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

_NEVER = -(1 << 62)
MAX_FINE_BUCKETS = 360
COARSE_BUCKETS = 72


class SlidingSums:
    """`width` counters in `buckets` buckets of `bucket_seconds`; sums over the last k < `buckets` buckets."""

    __slots__ = ("bucket_seconds", "buckets", "width", "cells", "stamps", "head")

    def __init__(self, bucket_seconds: float, buckets: int, width: int) -> None:
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self.width = width
        self.cells = array("d", bytes(8 * buckets * width))
        """Running totals: cells[slot * width + column] counts everything up to the slot's bucket."""
        self.stamps = array("q", [_NEVER]) * buckets
        self.head = _NEVER
        """Absolute number of the newest bucket: windows end there."""

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Restore a snapshot; one written before the rings held running totals (its buckets
        hold counts, and it has a `behind` cache) is converted, so a flow resumes its windows."""
        slots = state[1]
        for name in self.__slots__:
            setattr(self, name, slots[name])
        if "behind" in slots and self.head != _NEVER:
            counts, stamps, head, width, buckets = self.cells, self.stamps, self.head, self.width, self.buckets
            self.cells = array("d", bytes(8 * buckets * width))
            running = [0.0] * width
            for number in range(head - buckets + 1, head + 1):
                slot = number % buckets
                if stamps[slot] == number:
                    running = [running[column] + counts[slot * width + column] for column in range(width)]
                stamps[slot] = number
                self.cells[slot * width : slot * width + width] = array("d", running)

    def advance(self, at: float) -> None:
        """Move the end of the windows to `at` (never backwards)."""
        bucket = int(at // self.bucket_seconds)
        if bucket > self.head:
            self._move(bucket)

    def _move(self, bucket: int) -> None:
        """New head `bucket`: the buckets passed (at most a lap) get the head's total."""
        head, width, cells, stamps, buckets = self.head, self.width, self.cells, self.stamps, self.buckets
        if head == _NEVER:
            carry = array("d", bytes(8 * width))
        else:
            base = (head % buckets) * width
            carry = cells[base : base + width]
        for number in range(max(head + 1, bucket - buckets + 1), bucket + 1):
            slot = number % buckets
            stamps[slot] = number
            cells[slot * width : slot * width + width] = carry
        self.head = bucket

    def add(self, at: float, values: Sequence[float]) -> bool:
        """Count `values` at event time `at`; False (nothing counted) when `at` is older than the ring."""
        bucket = int(at // self.bucket_seconds)
        head = self.head
        if bucket > head:
            self._move(bucket)
            head = bucket
        elif bucket <= head - self.buckets:
            return False
        cells, width, buckets = self.cells, self.width, self.buckets
        if bucket == head:  # the usual case: the newest bucket
            base = (bucket % buckets) * width
            for column in range(width):
                cells[base + column] += values[column]
            return True
        for number in range(bucket, head + 1):  # a late event: its bucket and every one after it
            base = (number % buckets) * width
            for column in range(width):
                cells[base + column] += values[column]
        return True

    def sums(self, count: int) -> list[float]:
        """The counters summed over the last `count` buckets (the current one included)."""
        if not 0 < count < self.buckets:
            raise ValueError(f"a window of {count} buckets does not fit a ring of {self.buckets}")
        head, width, cells, buckets = self.head, self.width, self.cells, self.buckets
        if head == _NEVER:
            return [0.0] * width
        end = (head % buckets) * width
        start = ((head - count) % buckets) * width  # stamped: every bucket of the last lap is
        return [cells[end + column] - cells[start + column] for column in range(width)]


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

    def add(self, at: float, values: Sequence[float]) -> None:
        """Count `values` at `at`: into the pending fine bucket while time stays in it."""
        bucket = int(at // self.fine)
        pending = self.pending
        if bucket == self.pending_bucket:
            for column, value in enumerate(values):
                pending[column] += value
        elif bucket > self.pending_bucket:
            if any(pending):
                self._fold(pending)
            self.pending_bucket = bucket
            self.pending = list(values)
        else:
            for ring in self.rings.values():
                ring.add(at, values)

    def flush(self) -> None:
        """Fold the pending bucket into the rings (every ring's bucket width is a multiple of it)."""
        if any(self.pending):
            self._fold(self.pending)
            self.pending = [0.0] * len(self.pending)

    def _fold(self, values: list[float]) -> None:
        at = self.pending_bucket * self.fine
        for ring in self.rings.values():
            ring.add(at, values)

    def advance(self, at: float) -> None:
        self.flush()
        for ring in self.rings.values():
            ring.advance(at)

    def sums(self, window: float) -> list[float]:
        """Sums over `window` ending at the newest event (`advance` moves the end)."""
        self.flush()
        bucket, count = self.spans[window]
        return self.rings[bucket].sums(count)
