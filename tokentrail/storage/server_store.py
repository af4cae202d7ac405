"""`ServerStore`: a ClickHouse server through clickhouse-connect (TOKENTRAIL_CLICKHOUSE_URL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from tokentrail.storage.base import INSERT_SETTINGS, encode_rows, existing_ids_sql
from tokentrail.storage.errors import StorageError
from tokentrail.storage.sqltext import identifier


class ServerStore:
    """Same contract as EmbeddedStore; values bind server-side (HTTP `param_<name>`)."""

    def __init__(self, url: str, database: str = "default") -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        self._errors = ClickHouseError
        parsed = urlparse(url)
        self.where = f"{parsed.hostname}:{parsed.port or 8123}"
        try:
            self._client = clickhouse_connect.get_client(
                dsn=url,
                database=parsed.path.strip("/") or database,
                settings={"session_timezone": "UTC"},
            )
        except ClickHouseError as exc:
            raise StorageError(f"cannot connect to ClickHouse at {self.where}: {_one_line(exc)}") from None

    def insert_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> None:
        if rows:
            self.insert_json_lines(table, encode_rows(table, rows), dedup_token)

    def insert_json_lines(self, table: str, body: bytes, dedup_token: str | None = None) -> None:
        """`insert_rows` for rows already encoded by `encode_rows` (see EmbeddedStore)."""
        settings = dict(INSERT_SETTINGS)
        if dedup_token is not None:
            settings["insert_deduplication_token"] = dedup_token
        try:
            self._client.raw_insert(identifier(table), insert_block=body, settings=settings, fmt="JSONEachRow")
        except self._errors as exc:
            rows = body.count(b"\n")
            raise StorageError(f"insert of {rows} rows into {table} failed: {_one_line(exc)}") from None

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            bound = {name: _server_value(value) for name, value in (parameters or {}).items()}
            return list(self._client.query(sql, parameters=bound or None).named_results())
        except self._errors as exc:
            raise StorageError(f"query failed: {_one_line(exc)}") from None

    def command(self, sql: str) -> None:
        try:
            self._client.command(sql)
        except self._errors as exc:
            raise StorageError(f"statement failed: {_one_line(exc)}") from None

    def existing_ids(self, table: str, column: str, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        return {row["id"] for row in self.query(existing_ids_sql(table, column), {"ids": list(ids)})}

    def close(self) -> None:
        self._client.close()


def _server_value(value: object) -> object:
    """Datetimes as UTC text with milliseconds (clickhouse-connect would drop them)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_server_value(item) for item in value]
    return value


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
