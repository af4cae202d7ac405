"""`EmbeddedStore`: ClickHouse in this process (chdb 4.4, the ClickHouse 26.9 engine).

What chdb allows, checked on 4.4 (see docs/storage.md):
- one data path per process: a second `Session` on another path fails until every session
  on the first is closed; more sessions on the same path are fine and each keeps its own
  settings and current database;
- one process per path: ClickHouse locks `<path>/status`, so a second process cannot open a
  path another process holds (the query server, `tokentrail.storage.query_server`, is how
  other processes read it);
- a `Session` is thread-safe (internal mutex), so the flows' sink and the query server's
  threads can share the engine.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from chdb.session import Session

from tokentrail.storage.base import INSERT_SETTINGS, decode_compact, encode_rows, existing_ids_sql
from tokentrail.storage.errors import StorageError
from tokentrail.storage.sqltext import format_parameter, identifier, quote_string, single_statement

RESULT_FORMAT = "JSONCompactEachRowWithNamesAndTypes"
# Session settings: UTC for every DateTime without a zone, and decimals as strings in JSON
# results so no cost is ever rounded through a float.
_SESSION_SETUP = ("SET session_timezone = 'UTC'", "SET output_format_json_quote_decimals = 1")


def open_session(path: Path, database: str, read_only: bool = False) -> Session:
    """A chdb session on `path` using `database` (created if missing), UTC, decimal-exact."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        session = Session(str(path))
    except RuntimeError as exc:
        raise StorageError(_open_failure(path, exc)) from None
    try:
        for statement in _SESSION_SETUP:
            session.query(statement)
        session.query(f"CREATE DATABASE IF NOT EXISTS {identifier(database)}")
        session.query(f"USE {identifier(database)}")
        if read_only:
            session.query("SET readonly = 1")
    except RuntimeError as exc:
        session.close()
        raise StorageError(f"embedded ClickHouse at {path}: session set-up failed: {exc}") from None
    return session


def _open_failure(path: Path, exc: RuntimeError) -> str:
    """Name the usual cause: another process (or another path in this process) holds chdb."""
    text = str(exc)
    if "already initialized with path" in text:
        return (
            f"cannot open the embedded ClickHouse at {path}: this process already has another "
            f"path open and chdb allows one per process ({text.split('DB::Exception: ')[-1]})"
        )
    holder = _status_lock_holder(path / "status")
    if holder is not None:
        return (
            f"the embedded ClickHouse at {path} is held by another process ({holder}); "
            "stop it, or query through its query server (see docs/storage.md)"
        )
    return f"cannot open the embedded ClickHouse at {path}: {text}"


def _status_lock_holder(status: Path) -> str | None:
    """ClickHouse flocks `<path>/status` and writes its PID there; describe the holder, if any."""
    try:
        with status.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = next(
                    (
                        line.split(":", 1)[1].strip()
                        for line in status.read_text().splitlines()
                        if line.startswith("PID:")
                    ),
                    "unknown",
                )
                return f"pid {pid}"
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        pass
    return None


def _engine_message(exc: Exception) -> str:
    """The ClickHouse part of a chdb error, without chdb's wrapper prefixes."""
    text = str(exc)
    text = text[text.find("Code: ") :] if "Code: " in text else text
    return " ".join(text.split())


class EmbeddedStore:
    """The default store: chdb on TOKENTRAIL_HOME/clickhouse, held by this process."""

    def __init__(self, path: Path, database: str = "default") -> None:
        self.path = Path(path)
        self.database = database
        self._session: Session | None = open_session(self.path, database)

    def _live(self) -> Session:
        if self._session is None:
            raise StorageError(f"the embedded store at {self.path} is closed")
        return self._session

    def insert_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> None:
        if rows:
            self.insert_json_lines(table, encode_rows(table, rows), dedup_token)

    def insert_json_lines(self, table: str, body: bytes, dedup_token: str | None = None) -> None:
        """`insert_rows` for rows already encoded by `encode_rows` (the flows journal that body
        and re-send it, so each row is encoded once)."""
        settings = dict(INSERT_SETTINGS)
        if dedup_token is not None:
            settings["insert_deduplication_token"] = dedup_token
        clause = ", ".join(f"{name} = {quote_string(value)}" for name, value in settings.items())
        # send_insert streams the body as bytes: about 1.4x the rows/s of one query string.
        try:
            with self._live().send_insert(
                f"INSERT INTO {identifier(table)} SETTINGS {clause}", "JSONEachRow"
            ) as insert:
                insert.append(body)
                insert.finish()
        except RuntimeError as exc:
            rows = body.count(b"\n")
            raise StorageError(f"insert of {rows} rows into {table} failed: {_engine_message(exc)}") from None

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        params = {name: format_parameter(value) for name, value in (parameters or {}).items()}
        return decode_compact(self.query_raw(self._live(), sql, params))

    @staticmethod
    def query_raw(session: Session, sql: str, parameters: dict[str, str]) -> bytes:
        """The JSONCompactEachRowWithNamesAndTypes body of a query (also the query server's
        reply); `parameters` are already in bound-value text form (`format_parameter`)."""
        sql = single_statement(sql)
        try:
            return bytes(session.query(sql, RESULT_FORMAT, params=parameters or None).bytes())
        except RuntimeError as exc:
            raise StorageError(f"query failed: {_engine_message(exc)}") from None

    def command(self, sql: str) -> None:
        sql = single_statement(sql)
        try:
            self._live().query(sql)
        except RuntimeError as exc:
            raise StorageError(f"statement failed: {_engine_message(exc)}") from None

    def existing_ids(self, table: str, column: str, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        rows = self.query(existing_ids_sql(table, column), {"ids": list(ids)})
        return {row["id"] for row in rows}

    def read_only_session(self) -> Session:
        """A second session on the same engine that refuses writes (readonly=1): for the query server."""
        self._live()
        return open_session(self.path, self.database, read_only=True)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
