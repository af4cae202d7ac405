"""Batched, idempotent writes of rows to storage (docs/architecture.md, invariant 5),
independent of Bytewax (`flows.clickhouse` is the Bytewax side).

The tables are data: each sink is given `{table: id column}`, the column that identifies a
row (rows are deduplicated by it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from flows import metrics
from flows.replay import ReplayGuard
from flows.seen import SeenIds
from tokentrail.storage import Store
from tokentrail.storage.base import encode_rows
from tokentrail.storage.sqltext import identifier

log = logging.getLogger(__name__)

Row = dict[str, Any]
Batch = dict[str, list[Row]]
"""Rows by table."""
T = TypeVar("T")


def dedup_token(table: str, ids: list[str]) -> str:
    """Same rows in the same order, same token: storage drops a repeated INSERT."""
    digest = hashlib.sha256(table.encode())
    for row_id in ids:
        digest.update(b"\0" + row_id.encode())
    return digest.hexdigest()


def journal_entry(journal: Path, table: str) -> Path:
    """The in-flight INSERT of a partition into `table`: its token, a newline, then its body."""
    return journal / f"{table}.insert"


class Retry:
    """Runs a storage step until it succeeds: backoff from `initial` doubling to `maximum`,
    each failure logged and reported. Rows are never dropped; the flow backs up instead."""

    def __init__(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        initial: float = 0.1,
        maximum: float = 5.0,
        on_failure: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self._sleep = sleep
        self._initial = initial
        self._maximum = maximum
        self._on_failure = on_failure

    def __call__(self, table: str, size: int, step: Callable[[], T]) -> T:
        delay = self._initial
        attempt = 1
        while True:
            try:
                return step()
            except Exception as exc:  # noqa: BLE001 - any storage failure: retry, never drop
                log.warning(
                    "flush of %d %s rows failed (attempt %d), retrying in %.1fs: %s", size, table, attempt, delay, exc
                )
                if self._on_failure:
                    self._on_failure(table, exc)
                self._sleep(delay)
                delay = min(delay * 2, self._maximum)
                attempt += 1


class Writer:
    """Writes the batches of every sink partition of a process on one thread, so Python and
    the engine work side by side (chdb releases the GIL while it works).

    Batches handed off while an INSERT runs go out together: one INSERT per table, whose
    token is derived from all their ids and whose journal entry goes into each contributing
    partition's journal (re-sending it twice is harmless: the token drops the repeat). Under
    load INSERTs grow by themselves, and each INSERT costs the rollup views a fixed amount.
    """

    def __init__(
        self,
        store: Store,
        tables: Mapping[str, str],
        retry: Retry,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_flush: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self._store = store
        self._tables = dict(tables)
        self._retry = retry
        self._clock = clock
        self._on_flush = on_flush
        self._queue: queue.SimpleQueue[tuple[Batch, Path | None, Future[None]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, batch: Batch, journal: Path | None) -> Future[None]:
        """Write `batch` ({table: rows}); the future completes when it is durable."""
        done: Future[None] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="clickhouse-writer", daemon=True)
                self._thread.start()
        self._queue.put((batch, journal, done))
        return done

    def resend(self, table: str, entry: Path) -> None:
        """A journaled INSERT, exactly as it was (same rows, same token), on the caller's thread."""
        token, _, body = entry.read_bytes().partition(b"\n")
        self._insert(table, body, token.decode())

    def _run(self) -> None:
        while True:
            waiting = [self._queue.get()]
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            try:
                self._write(waiting)
            except BaseException as exc:  # noqa: BLE001 - hand it to every waiting partition
                for _, _, done in waiting:
                    done.set_exception(exc)
            else:
                for _, _, done in waiting:
                    done.set_result(None)

    def _write(self, waiting: list[tuple[Batch, Path | None, Future[None]]]) -> None:
        for table, column in self._tables.items():
            rows = [row for batch, _, _ in waiting for row in batch.get(table, ())]
            if not rows:
                continue
            started = self._clock()
            token = dedup_token(table, [row[column] for row in rows])
            body = encode_rows(table, rows)  # once: the journal keeps the INSERT's own bytes
            entries = {
                journal_entry(journal, table) for batch, journal, _ in waiting if journal is not None and table in batch
            }
            for entry in entries:
                partial = entry.with_suffix(".partial")  # a kill mid-write leaves no torn entry
                with partial.open("wb") as handle:
                    handle.write(token.encode() + b"\n")
                    handle.write(body)
                os.replace(partial, entry)
            self._insert(table, body, token)
            for entry in entries:
                entry.unlink()
            if self._on_flush:
                self._on_flush(table, len(rows), self._clock() - started)

    def _insert(self, table: str, body: bytes, token: str) -> None:
        self._retry(table, body.count(b"\n"), lambda: self._store.insert_json_lines(table, body, dedup_token=token))


class BatchingSink:
    """Buffers rows per table and flushes them when `max_rows` are waiting or the oldest has
    waited `max_age` seconds.

    Order of a flush, per table: (1) dedup: drop rows whose ids storage already holds
    (`existing_ids`; a replay after a crash re-sends rows that were written), asking only
    about ids a replay may repeat (`flows.replay`), and record the ids about to be written;
    (2) journal the resulting batch and its token; (3) write it in one INSERT with a dedup
    token derived from its ids (a retried INSERT that had in fact landed is dropped by
    storage), then remove the journal; (4) only then does `flush` return, and only after that
    does the caller acknowledge: the Bytewax snapshot that advances the Kafka offsets is taken
    after the flush. A failed step retries the same batch with backoff, for as long as it
    takes, logging each failure; rows are never dropped.

    Steps (2) and (3) run on the `Writer` thread while the next batch fills. At most one batch
    of a partition is in flight: cutting the next one waits for it (back-pressure), and
    `flush` waits for everything.

    Why the journal: an INSERT killed midway can leave its rows in the base table but not yet
    in a materialized view's rollup. Step (1) of the replay would then skip those rows and the
    rollup would never get them. `resume()` re-sends a journaled batch exactly as it was,
    same rows and token and no step (1): storage drops what it already has, per table and per
    view, and writes what it lacks.
    """

    def __init__(
        self,
        store: Store,
        tables: Mapping[str, str],
        max_rows: int = 5000,
        max_age: float = 0.5,
        *,
        writer: Writer | None = None,
        retry: Retry | None = None,
        clock: Callable[[], float] = time.monotonic,
        journal: Path | None = None,
        seen: SeenIds | None = None,
    ) -> None:
        self._store = store
        self._seen = seen
        self._max_rows = max_rows
        self._max_age = max_age
        self._clock = clock
        self._tables = dict(tables)
        self._retry = retry or Retry()
        self._writer = writer or Writer(store, self._tables, self._retry, clock=clock)
        self._buffers: Batch = {table: [] for table in self._tables}
        self._pending = 0
        self._oldest: float | None = None
        self._journal = journal
        if journal is not None:
            journal.mkdir(parents=True, exist_ok=True)
        self._replay = ReplayGuard(journal, self._tables)
        self._in_flight: Future[None] | None = None

    def resume(self, state: dict[str, Any] | None) -> int:
        """Start from the state of the last committed snapshot (None: none): re-send batches a
        crash left in the journal, then learn which ids a replay may repeat. Returns how many
        journaled batches there were."""
        found = 0
        if self._journal is not None:
            for table in self._tables:
                entry = journal_entry(self._journal, table)
                if entry.exists():
                    log.info("re-sending a journaled INSERT into %s", table)
                    self._writer.resend(table, entry)
                    entry.unlink()
                    found += 1
        self._replay.resume(state, self._holds_rows)
        log.info(
            "sink resumed at generation %d: %s",
            self._replay.generation,
            "every batch is looked up"
            if self._replay.check_all
            else f"{sum(len(self._replay.suspects(table)) for table in self._tables)} ids a replay may repeat",
        )
        return found

    def snapshot(self) -> dict[str, Any]:
        """Flush, then the state Bytewax keeps with the epoch (see `flows.replay`)."""
        self.flush()
        return self._replay.advance()

    @property
    def pending(self) -> int:
        return self._pending

    def add(self, table: str, rows: list[Row]) -> None:
        """Buffer `rows` for `table`, one this sink was declared with (else ValueError: a flow
        sending rows for a table it did not declare is a programming error)."""
        if not rows:
            return
        buffer = self._buffers.get(table)
        if buffer is None:
            raise ValueError(
                f"rows for table {table!r}, which this sink does not write (it writes {', '.join(self._tables)})"
            )
        buffer.extend(rows)
        self._pending += len(rows)
        if self._oldest is None:
            self._oldest = self._clock()

    def due(self) -> bool:
        if not self._pending:
            return False
        return self._pending >= self._max_rows or (
            self._oldest is not None and self._clock() - self._oldest >= self._max_age
        )

    def maybe_flush(self) -> bool:
        """Hand the buffered rows to the writer when they are due."""
        if self.due():
            self._hand_off()
            return True
        return False

    def flush(self) -> None:
        """Write everything buffered; returns only when it is durable (see the class docstring)."""
        self._hand_off()
        self._wait()

    def _hand_off(self) -> None:
        self._wait()
        batch: Batch = {}
        for table, rows in self._buffers.items():
            if rows:
                fresh, present = self._retry(table, len(rows), partial(self._dedup, table, rows))
                self._replay.record(table, [row[self._tables[table]] for row in fresh] + present)
                if fresh:
                    batch[table] = fresh
        self._buffers = {table: [] for table in self._tables}
        if batch:
            self._in_flight = self._writer.submit(batch, self._journal)
        self._pending = 0
        self._oldest = None

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()  # re-raises what killed the write (a crash, never a storage error)

    def _dedup(self, table: str, rows: list[Row]) -> tuple[list[Row], list[str]]:
        """(rows whose ids storage does not hold yet, each id once; the ids it holds). Looked
        up: ids a replay may repeat, and ids the process's filter of written ids (`seen`,
        flows.seen) may have seen; everything when the position is unknown."""
        column = self._tables[table]
        suspects = self._replay.suspects(table)
        written = self._seen
        if self._replay.check_all:
            asked = [row[column] for row in rows]
        elif written is None:
            asked = [row[column] for row in rows if row[column] in suspects] if suspects else []
        else:
            maybe_held = written.suspects(table, [(row[column], row.get("timestamp", "")) for row in rows])
            asked = [
                row[column] for row, maybe in zip(rows, maybe_held, strict=True) if maybe or row[column] in suspects
            ]
        present = self._store.existing_ids(table, column, asked) if asked else set()
        fresh: list[Row] = []
        seen = set(present)
        for row in rows:
            row_id = row[column]
            if row_id not in seen:
                seen.add(row_id)
                fresh.append(row)
        if written is not None:
            written.add(table, (row[column] for row in fresh))
        if len(fresh) < len(rows):
            metrics.DUPLICATES.labels(table).inc(len(rows) - len(fresh))
        return fresh, list(present)

    def _holds_rows(self, table: str) -> bool:
        return bool(
            self._store.query(f"SELECT count() AS n FROM (SELECT 1 FROM {identifier(table)} LIMIT 1)")[0]["n"] > 0
        )
