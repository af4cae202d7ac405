"""The `events` row contract: a UnifiedEvent (JSON form) <-> a row of the `events` table.

The one place that maps the two (the table itself: clickhouse/0002_events.sql). The flows
write rows with `event_row`; `tokentrail events` reads them back with `unified_event`.
Actor and context are flattened into columns (a missing context field is ''), the payload is
a JSON string, and the timestamp is ClickHouse DateTime64(3) text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from schemas.models import format_timestamp

EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "event_source",
    "tenant_id",
    "timestamp",
    "severity",
    "actor_type",
    "actor_id",
    "request_id",
    "trace_id",
    "payload",
)
"""The columns of `events`, in table order."""


def clickhouse_time(timestamp: str) -> str:
    """Canonical RFC 3339 `2026-11-28T12:00:00.123Z` -> `2026-11-28 12:00:00.123` (slicing:
    the record reader made sure the input is canonical)."""
    return f"{timestamp[:10]} {timestamp[11:23]}"


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    """The `events` row of any UnifiedEvent in its JSON form."""
    context = event.get("context") or {}
    return {
        "event_id": event["event_id"],
        "event_type": event["event_type"],
        "event_source": event["event_source"],
        "tenant_id": event["tenant_id"],
        "timestamp": clickhouse_time(event["timestamp"]),
        "severity": event["severity"],
        "actor_type": event["actor"]["type"],
        "actor_id": event["actor"]["id"],
        "request_id": context.get("request_id") or "",
        "trace_id": context.get("trace_id") or "",
        "payload": orjson.dumps(event["payload"]).decode(),
    }


def unified_event(row: dict[str, Any]) -> dict[str, Any]:
    """An `events` row (as a store returns it) back in the UnifiedEvent JSON shape: actor and
    context nested, payload parsed, timestamp RFC 3339 with milliseconds; '' context fields
    are null."""
    timestamp = row["timestamp"]
    return {
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "event_source": row["event_source"],
        "tenant_id": row["tenant_id"],
        "timestamp": format_timestamp(timestamp) if isinstance(timestamp, datetime) else timestamp,
        "severity": row["severity"],
        "actor": {"type": row["actor_type"], "id": row["actor_id"]},
        "context": {"request_id": row["request_id"] or None, "trace_id": row["trace_id"] or None},
        "payload": orjson.loads(row["payload"]) if row["payload"] else {},
    }
