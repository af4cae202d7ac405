"""`LockedStore`: one store shared by threads (the workers and sinks of a flows process)."""

from __future__ import annotations

import threading
from typing import Any

from tokentrail.storage.base import Store


class LockedStore:
    """Serializes the calls of every thread into `store`: a clickhouse-connect client is not
    thread-safe, and one lock keeps each adapter's behaviour the same under `-w N`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()

    def insert_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> None:
        with self._lock:
            self._store.insert_rows(table, rows, dedup_token)

    def insert_json_lines(self, table: str, body: bytes, dedup_token: str | None = None) -> None:
        with self._lock:
            self._store.insert_json_lines(table, body, dedup_token)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return self._store.query(sql, parameters)

    def command(self, sql: str) -> None:
        with self._lock:
            self._store.command(sql)

    def existing_ids(self, table: str, column: str, ids: list[str]) -> set[str]:
        with self._lock:
            return self._store.existing_ids(table, column, ids)

    def close(self) -> None:
        with self._lock:
            self._store.close()
