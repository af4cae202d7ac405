"""The `Store` interface every adapter implements, and the row codecs they share.

Rows go in as JSONEachRow (one orjson-encoded object per line). Query results from the
embedded engine and the query server come back as JSONCompactEachRowWithNamesAndTypes and are
decoded by column type, so every adapter returns the same Python types as clickhouse-connect:
int for integers, Decimal for decimals, aware UTC datetimes, bool, lists, None for NULL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import orjson

from tokentrail.storage.errors import StorageError
from tokentrail.storage.sqltext import identifier


@runtime_checkable
class Store(Protocol):
    """Where the flows write and the CLIs read. See docs/storage.md."""

    def insert_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> None:
        """One INSERT of `rows` (JSONEachRow). With `dedup_token`, ClickHouse drops a repeat of
        the same insert (base table and rollups). Raises StorageError; never drops silently."""

    def insert_json_lines(self, table: str, body: bytes, dedup_token: str | None = None) -> None:
        """`insert_rows` for rows already encoded by `encode_rows` (the flows journal that body
        and re-send it, so each row is encoded once)."""

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT; values bind server-side to `{name:Type}` placeholders."""

    def command(self, sql: str) -> None:
        """Run one DDL statement (migrations)."""

    def existing_ids(self, table: str, column: str, ids: list[str]) -> set[str]:
        """The subset of `ids` already present in `table.column`."""

    def close(self) -> None:
        """Release the connection or the engine; the store is unusable afterwards."""


def existing_ids_sql(table: str, column: str) -> str:
    """The lookup every adapter runs; names are checked identifiers, ids a bound parameter."""
    col = identifier(column)
    return f"SELECT DISTINCT {col} AS id FROM {identifier(table)} WHERE {col} IN {{ids:Array(String)}}"


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_rows(table: str, rows: Iterable[dict[str, Any]]) -> bytes:
    """JSONEachRow body; datetimes become RFC 3339 (read back with best-effort parsing)."""
    try:
        return b"\n".join(orjson.dumps(row, default=_json_default) for row in rows) + b"\n"
    except TypeError as exc:
        raise StorageError(f"insert into {table}: a row cannot be encoded as JSON: {exc}") from None


# Settings for every insert: accept RFC 3339 timestamps as well as "YYYY-MM-DD HH:MM:SS.mmm",
# and reject a key the table lacks instead of dropping it (a typo must not lose a column).
INSERT_SETTINGS = {"date_time_input_format": "best_effort", "input_format_skip_unknown_fields": "0"}

_WRAPPER = re.compile(r"^(Nullable|LowCardinality)\((.*)\)$")
_TIMEZONE = re.compile(r"'([^']+)'")


def value_decoder(ch_type: str) -> Callable[[Any], Any]:
    """A function turning a JSON value of ClickHouse type `ch_type` into its Python value."""
    match = _WRAPPER.match(ch_type)
    if match:
        inner = value_decoder(match.group(2))
        return (lambda v: None if v is None else inner(v)) if match.group(1) == "Nullable" else inner
    if ch_type.startswith("Array("):
        inner = value_decoder(ch_type[6:-1])
        return lambda v: [inner(x) for x in v]
    if re.match(r"^U?Int\d+$", ch_type):
        return int
    if ch_type.startswith("Decimal"):
        return lambda v: Decimal(str(v))
    if ch_type.startswith("Float"):
        return float
    if ch_type == "Bool":
        return bool
    if ch_type.startswith("DateTime"):
        zone = _TIMEZONE.search(ch_type)
        tz = ZoneInfo(zone.group(1) if zone else "UTC")
        return lambda v: datetime.fromisoformat(v).replace(tzinfo=tz)
    if ch_type.startswith("Date"):
        return date.fromisoformat
    return lambda v: v


def decode_compact(body: bytes) -> list[dict[str, Any]]:
    """Rows of a JSONCompactEachRowWithNamesAndTypes body, typed (see module docstring)."""
    lines = body.splitlines()
    if len(lines) < 2:
        return []
    names = orjson.loads(lines[0])
    decoders = [value_decoder(t) for t in orjson.loads(lines[1])]
    rows = []
    for line in lines[2:]:
        values = orjson.loads(line)
        rows.append({n: d(v) for n, d, v in zip(names, decoders, values, strict=True)})
    return rows
