"""What the detectors read from an `llm_call` / `llm_call_failed` UnifiedEvent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


class EventError(ValueError):
    """A call event the detectors cannot read; the message says which field is wrong."""


@dataclass(slots=True)
class Call:
    """One call as detection sees it (not frozen: frozen dataclasses are slower to build, and
    this is built once per event)."""

    event_id: str
    tenant_id: str
    at: float
    """Event time, seconds since the epoch (the event's `timestamp`)."""
    key_id: str
    actor: tuple[str, str]
    """(type, id) of the caller."""
    root: tuple[str, str]
    """(type, id) of the human at the root of the delegation chain."""
    chain_keys: tuple[str, ...]
    provider: str
    model: str
    status: int
    error_type: str
    error_code: str
    context_hash: str
    cost_usd: float
    failed: bool
    """Any failure the caller saw (status >= 400 or a provider error)."""
    budget_error: bool
    """A failure that spends the error budget: a 5xx, a 429 or a timeout."""


def is_budget_error(status: int, error_type: str) -> bool:
    """The SLO's bad event: the service failed the caller (5xx), throttled it (429) or timed
    out. Client mistakes (400, 401, 404, ...) and disconnects do not spend the budget."""
    return status >= 500 or status == 429 or "timeout" in error_type.lower()


_last_minute: list[Any] = ["", 0]
"""The last `YYYY-MM-DDTHH:MM` prefix parsed and its epoch second: events arrive about in
time order, so most timestamps share their minute with the one before."""


def epoch_seconds(timestamp: str) -> float:
    """RFC 3339 UTC with milliseconds (the wire format) -> epoch seconds; other forms parsed in full."""
    if len(timestamp) == 24 and timestamp[16] == ":" and timestamp[19] == "." and timestamp[23] == "Z":
        prefix = timestamp[:16]
        if prefix != _last_minute[0]:
            _last_minute[0], _last_minute[1] = prefix, int(datetime.fromisoformat(prefix + "+00:00").timestamp())
        second = int(timestamp[17:19])
        if second > 59:
            raise ValueError(f"second out of range in {timestamp!r}")
        return float(_last_minute[1] + second) + int(timestamp[20:23]) / 1000
    return datetime.fromisoformat(timestamp).timestamp()


def read_call(event: dict[str, Any]) -> Call | None:
    """The call an event describes, None for other event types; EventError when a call event
    lacks what detection needs. (Runs once per event: plain indexing, positional arguments.)"""
    event_type = event.get("event_type")
    if event_type != "llm_call" and event_type != "llm_call_failed":
        return None
    try:
        payload = event["payload"]
        status = int(payload["status"])
        error_type = payload.get("error_type") or ""
        actor = event["actor"]
        root = payload.get("root_actor") or actor
        cost = payload.get("cost_usd")
        return Call(
            event["event_id"],
            event["tenant_id"],
            epoch_seconds(event["timestamp"]),
            payload["key_id"],
            (actor["type"], actor["id"]),
            (root["type"], root["id"]),
            tuple([link["key_id"] for link in payload.get("chain") or ()]),
            payload.get("provider") or "",
            payload.get("model") or payload.get("requested_model") or "",
            status,
            error_type,
            payload.get("error_code") or "",
            payload.get("context_hash") or "",
            float(cost) if cost else 0.0,
            status >= 400 or bool(error_type),
            status >= 500 or status == 429 or (bool(error_type) and is_budget_error(status, error_type)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EventError(f"call event {event.get('event_id')!r}: {type(exc).__name__}: {exc}") from None
