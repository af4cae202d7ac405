"""Counted once, always: which rows storage may already hold, in bounded memory
(docs/architecture.md, "Counted once").

The same `call_id` can reach the raw topic again by routes the flows do not control: the
gateway re-sending its write-ahead log after a crash (marked `tokentrail-redelivery`), a
delivery that timed out but had landed, an operator re-producing a record. Looking every row
up in storage costs ~10 µs a row. Instead a Bloom filter holds every id written (and, at
start, every id storage holds from `since` on): an id it has never seen is certainly new and
goes straight in; the few it may have seen (a repeat, or a false positive at `error_rate`)
are looked up exactly. A row older than `since` is always looked up (the filter does not
cover it). Memory is fixed by `capacity`; past it the false-positive rate, and so the
lookups, grow, never the mistakes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from tokentrail.storage.sqltext import identifier

log = logging.getLogger("tokentrail.flows.seen")

PAGE_ROWS = 500_000
"""Ids read per query while loading the filter from storage."""


class BloomFilter:
    """A fixed-size Bloom filter over byte strings (blake2b, double hashing)."""

    def __init__(self, capacity: int, error_rate: float = 0.01) -> None:
        self.bits = max(64, int(-capacity * math.log(error_rate) / math.log(2) ** 2))
        self.hashes = max(1, round(self.bits / capacity * math.log(2)))
        self._array = bytearray((self.bits + 7) // 8)
        self.count = 0

    def _positions(self, item: bytes) -> list[int]:
        digest = hashlib.blake2b(item, digest_size=16).digest()
        first = int.from_bytes(digest[:8], "little")
        step = int.from_bytes(digest[8:], "little") | 1
        bits = self.bits
        return [(first + i * step) % bits for i in range(self.hashes)]

    def add(self, item: bytes) -> None:
        array = self._array
        for position in self._positions(item):
            array[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def __contains__(self, item: bytes) -> bool:
        array = self._array
        return all(array[position >> 3] & (1 << (position & 7)) for position in self._positions(item))


class IdStore(Protocol):
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


class SeenIds:
    """Ids written to each table, shared by the sink partitions of a process (thread-safe)."""

    def __init__(self, capacity: int, since: str = "", error_rate: float = 0.01) -> None:
        self.capacity = capacity
        self.since = since
        """Rows with an earlier `timestamp` (ClickHouse text form) are not covered: look them up."""
        self._filter = BloomFilter(capacity, error_rate)
        self._lock = threading.Lock()

    def suspect(self, table: str, row_id: str, timestamp: str) -> bool:
        """Whether storage may hold this row (then look it up). A row without a `timestamp`
        (a table that has none, such as `alerts`) is not covered by the filter: looked up."""
        if not timestamp or timestamp < self.since:
            return True
        with self._lock:
            return f"{table}\x00{row_id}".encode() in self._filter

    def add(self, table: str, ids: Iterable[str]) -> None:
        with self._lock:
            for row_id in ids:
                self._filter.add(f"{table}\x00{row_id}".encode())

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
