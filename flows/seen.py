"""Counted once, always: which rows storage may already hold, in bounded memory
(docs/architecture.md, "Counted once").

The same `call_id` can reach the raw topic again by routes the flows do not control: the
gateway re-sending its write-ahead log after a crash (marked `tokentrail-redelivery`), a
delivery that timed out but had landed, an operator re-producing a record. Looking every row
up in storage costs ~10 µs a row. Instead a Bloom filter (per process) holds every id written (and, at
start, every id storage holds from `since` on): an id it has never seen is certainly new and
goes straight in; the few it may have seen (a repeat, or a false positive at `error_rate`)
are looked up exactly. A row older than `since` is always looked up (the filter does not
cover it). Memory is fixed by `capacity`; past it the false-positive rate, and so the
lookups, grow, never the mistakes.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tokentrail.storage.sqltext import identifier

log = logging.getLogger("tokentrail.flows.seen")

PAGE_ROWS = 500_000
"""Ids read per query while loading the filter from storage."""


class BloomFilter:
    """A fixed-size Bloom filter over 64-bit item hashes (double hashing: the hash's two halves),
    checked and filled a batch at a time with numpy: per row in Python it cost the enrich flow's
    worker 17% of its time (blake2b, seven bit positions, a loop each; bench/flows/RESULTS.md)."""

    def __init__(self, capacity: int, error_rate: float = 0.01) -> None:
        self.bits = max(64, int(-capacity * math.log(error_rate) / math.log(2) ** 2))
        self.hashes = max(1, round(self.bits / capacity * math.log(2)))
        self._array = np.zeros((self.bits + 7) // 8, dtype=np.uint8)
        self._steps = np.arange(self.hashes, dtype=np.uint64)
        self.count = 0

    def _positions(self, hashes: Sequence[int]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8]]:
        """(byte index, bit mask) of each item's bits, one row per item."""
        values = np.array(hashes, dtype=np.int64).view(np.uint64)
        first = (values & np.uint64(0xFFFFFFFF))[:, None]
        step = ((values >> np.uint64(32)) | np.uint64(1))[:, None]
        positions = (first + self._steps * step) % np.uint64(self.bits)
        masks = np.left_shift(np.uint8(1), (positions & np.uint64(7)).astype(np.uint8))
        return positions >> np.uint64(3), masks

    def add(self, hashes: Sequence[int]) -> None:
        if len(hashes):
            indexes, masks = self._positions(hashes)
            np.bitwise_or.at(self._array, indexes, masks)
            self.count += len(hashes)

    def contains(self, hashes: Sequence[int]) -> list[bool]:
        """Per item: whether it may have been added (never False for one that was)."""
        if not len(hashes):
            return []
        indexes, masks = self._positions(hashes)
        return ((self._array[indexes] & masks) != 0).all(axis=1).tolist()  # type: ignore[no-any-return]


class IdStore(Protocol):
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


def _id_hash(table: str, row_id: str) -> int:
    """The filter's hash of a row: Python's own (a string caches it), salted per process, which
    is why a filter lives in one process only and is loaded from storage at start."""
    return hash((table, row_id))


class SeenIds:
    """Ids written to each table, shared by the sink partitions of a process (thread-safe)."""

    def __init__(self, capacity: int, since: str = "", error_rate: float = 0.01) -> None:
        self.capacity = capacity
        self.since = since
        """Rows with an earlier `timestamp` (ClickHouse text form) are not covered: look them up."""
        self._filter = BloomFilter(capacity, error_rate)
        self._lock = threading.Lock()

    def suspects(self, table: str, rows: Sequence[tuple[str, str]]) -> list[bool]:
        """Per (id, timestamp): whether storage may hold the row (then look it up). A row
        without a `timestamp` (a table that has none, such as `alerts`) or older than `since`
        is not covered by the filter: looked up."""
        since = self.since
        covered = [bool(timestamp) and timestamp >= since for _, timestamp in rows]
        hashes = [_id_hash(table, row_id) for (row_id, _), inside in zip(rows, covered, strict=True) if inside]
        with self._lock:
            maybe = iter(self._filter.contains(hashes))
        return [next(maybe) if inside else True for inside in covered]

    def add(self, table: str, ids: Iterable[str]) -> None:
        hashes = [_id_hash(table, row_id) for row_id in ids]
        with self._lock:
            self._filter.add(hashes)

    @property
    def count(self) -> int:
        return self._filter.count

    @classmethod
    def load(
        cls, store: IdStore, tables: Mapping[str, str], capacity: int, window_hours: float, error_rate: float = 0.01
    ) -> SeenIds:
        """A filter holding every id storage has with a timestamp within `window_hours` of its
        newest row (the raw topic's retention: an older record cannot come back from it; one
        re-produced by hand is older than `since` and looked up). `tables` is {table: id
        column}; tables without a `timestamp` column are left out (their rows are looked up)."""
        tables = {table: column for table, column in tables.items() if _has_timestamp(store, table)}
        newest = ""
        for table in tables:
            rows = store.query(f"SELECT toString(max(timestamp)) AS t, count() AS n FROM {identifier(table)}")
            if rows and rows[0]["n"]:
                newest = max(newest, rows[0]["t"])
        if not newest:
            return cls(capacity, "", error_rate)
        since_rows = store.query(
            "SELECT toString(parseDateTime64BestEffort({newest:String}, 3, 'UTC') - toIntervalSecond({window:UInt64}))"
            " AS since",
            {"newest": newest, "window": int(window_hours * 3600)},
        )
        seen = cls(capacity, since_rows[0]["since"], error_rate)
        for table, column in tables.items():
            name, id_column = identifier(table), identifier(column)
            total = store.query(
                f"SELECT count() AS n FROM {name} WHERE timestamp >= {{since:DateTime64(3, 'UTC')}}",
                {"since": seen.since},
            )[0]["n"]
            pages = max(1, -(-total // PAGE_ROWS))
            for page in range(pages):
                rows = store.query(
                    f"SELECT {id_column} AS id FROM {name} WHERE timestamp >= {{since:DateTime64(3, 'UTC')}}"
                    f" AND cityHash64({id_column}) % {pages} = {page}",
                    {"since": seen.since},
                )
                seen.add(table, (row["id"] for row in rows))
        if seen.count > capacity:
            log.warning(
                "%d ids in storage since %s, over TOKENTRAIL_FLOWS_DEDUP_CAPACITY=%d: more rows will be looked up",
                seen.count,
                seen.since,
                capacity,
            )
        log.info("dedup filter loaded: %d ids since %s", seen.count, seen.since)
        return seen


def _has_timestamp(store: IdStore, table: str) -> bool:
    rows = store.query(
        "SELECT count() AS n FROM system.columns WHERE database = currentDatabase()"
        " AND table = {table:String} AND name = 'timestamp'",
        {"table": table},
    )
    return bool(rows and rows[0]["n"])
