"""Rows from a dataflow into ClickHouse: the Bytewax side of `flows.sink`.

A flow declares the tables it writes and the column that identifies a row of each
(`ClickHouseSink(store, {"llm_calls": "call_id", ...}, ...)`) and sends `Rows` keyed by a
number (see `flows.connectors`). Each partition batches, dedups and journals its rows through
a `BatchingSink` and flushes it in `snapshot()`, which Bytewax calls before it commits an
epoch: a committed Kafka offset never runs ahead of rows that are not durable
(docs/architecture.md, invariant 5).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows import metrics
from flows.connectors import NumberedParts
from flows.seen import SeenIds
from flows.settings import FlowSettings
from flows.sink import BatchingSink, Retry, Writer
from tokentrail.storage import Store

Row = dict[str, Any]
Rows = dict[str, list[Row]]
"""Rows for ClickHouse by table name; every table must be one the sink declared."""


class _ClickHousePartition(StatefulSinkPartition[Rows | None, dict[str, Any]]):
    def __init__(self, sink: BatchingSink) -> None:
        self.sink = sink

    def write_batch(self, values: list[Rows | None]) -> None:
        for rows in values:
            if rows is not None:  # None: a tick, so the age flush happens when input is idle
                for table, table_rows in rows.items():
                    self.sink.add(table, table_rows)
        self.sink.maybe_flush()

    def snapshot(self) -> dict[str, Any]:
        return self.sink.snapshot()  # flushes before the epoch (and its Kafka offsets) is committed

    def close(self) -> None:
        self.sink.flush()


class ClickHouseSink(NumberedParts, FixedPartitionedSink[Rows | None, dict[str, Any]]):
    """Rows into `tables` ({table: id column}) through a BatchingSink per partition, journaled
    under `journal/<partition>` (None: no journal, for tests that never crash), all written by
    one Writer thread per sink. `store` is shared by the partitions: it must be safe to call
    from several threads (`tokentrail.storage.LockedStore`)."""

    def __init__(
        self, store: Store, tables: Mapping[str, str], settings: FlowSettings, journal: Path | None = None
    ) -> None:
        self._store = store
        self._tables = dict(tables)
        self._settings = settings
        self._journal = journal
        self._writer: Writer | None = None
        self._seen: SeenIds | None = None
        self._lock = threading.Lock()

    def build_part(self, step_id: str, for_part: str, resume_state: dict[str, Any] | None) -> _ClickHousePartition:
        retry = Retry(on_failure=metrics.record_flush_failure)
        with self._lock:
            if self._writer is None:
                self._writer = Writer(self._store, self._tables, retry, on_flush=metrics.record_flush)
            if self._seen is None:  # one filter of written ids per process (counted once: flows.seen)
                self._seen = SeenIds.load(
                    self._store,
                    self._tables,
                    self._settings.flows_dedup_capacity,
                    self._settings.flows_dedup_window_hours,
                )
        sink = BatchingSink(
            self._store,
            self._tables,
            self._settings.flows_batch_rows,
            self._settings.flows_flush_ms / 1000,
            writer=self._writer,
            retry=retry,
            journal=self._journal / for_part if self._journal else None,
            seen=self._seen,
        )
        sink.resume(resume_state)
        return _ClickHousePartition(sink)
