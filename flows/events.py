"""What a priced call becomes: a UnifiedEvent for `tokentrail.events` and rows for ClickHouse.

Row keys follow the storage contract exactly (`llm_calls`; `events` rows come from
`tokentrail.storage.event_rows`, the one mapping of that table); values are what orjson
serializes (timestamps as `YYYY-MM-DD HH:MM:SS.mmm` UTC strings, costs as decimal strings).
Timestamps on input are already canonical RFC 3339 (`...T12:00:00.123Z`, the reader made
sure), so conversion is slicing, not parsing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flows.identity import Attribution
from flows.pricing import PricedUsage
from tokentrail.storage.event_rows import clickhouse_time, event_row

COST_QUANTUM = Decimal("1E-10")
"""ClickHouse keeps costs as Decimal(20,10)."""


def cost_text(cost: Decimal | None) -> str | None:
    return None if cost is None else f"{cost.quantize(COST_QUANTUM):f}"


def severity(status: int, failed: bool) -> str:
    if status >= 500:
        return "ERROR"
    return "WARN" if failed else "INFO"


def call_outputs(
    call: dict[str, Any], who: Attribution, priced: PricedUsage
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(UnifiedEvent JSON, `llm_calls` row, `events` row) of one call; the event id is the
    call id, so a replayed call makes the same event and storage can drop the repeat."""
    status = call["status"]
    error_type = call.get("error_type")
    failed = status >= 400 or bool(error_type)
    caller_key, caller_type, caller_id = who.chain[-1]
    root_key, root_type, root_id = who.chain[0]
    cost, input_cost, output_cost = cost_text(priced.cost), cost_text(priced.input_cost), cost_text(priced.output_cost)
    served = call.get("served_model")
    requested = call.get("requested_model")
    request_id = call["request_id"]
    trace_id = call.get("trace_id")
    received_at = call["received_at"]
    event_type = "llm_call_failed" if failed else "llm_call"
    level = severity(status, failed)
    payload = {
        "call_id": call["call_id"],
        "key_id": who.key_id,
        "chain": [{"key_id": k, "actor": {"type": t, "id": i}} for k, t, i in who.chain],
        "root_actor": {"type": root_type, "id": root_id},
        "identity_known": who.identity_known,
        "provider": call["provider"],
        "endpoint": call["endpoint"],
        "requested_model": requested,
        "model": served,
        "context_hash": call.get("context_hash"),
        "stream": call.get("stream", False),
        "status": status,
        "error_type": error_type,
        "error_code": call.get("error_code"),
        "client_disconnected": call.get("client_disconnected", False),
        "tokens": {
            "input": priced.input_tokens,
            "output": priced.output_tokens,
            "cache_read": priced.cache_read_tokens,
            "cache_write": priced.cache_write_tokens,
            "reasoning": priced.reasoning_tokens,
        },
        "cost_usd": cost,
        "input_cost_usd": input_cost,
        "output_cost_usd": output_cost,
        "unpriced": priced.unpriced,
        "unpriced_reason": priced.problem,
        "latency_ms": call["latency_ms"],
        "ttft_ms": call.get("ttft_ms"),
        "session_id": call.get("session_id"),
    }
    event = {
        "event_id": call["call_id"],
        "event_type": event_type,
        "event_source": "flows",
        "tenant_id": who.tenant_id,
        "timestamp": received_at,
        "severity": level,
        "actor": {"type": caller_type, "id": caller_id},
        "context": {"request_id": request_id, "trace_id": trace_id},
        "payload": payload,
    }
    row = {
        "call_id": call["call_id"],
        "timestamp": clickhouse_time(received_at),
        "completed_at": clickhouse_time(call["completed_at"]),
        "tenant_id": who.tenant_id,
        "key_id": who.key_id,
        "actor_type": caller_type,
        "actor_id": caller_id,
        "root_key_id": root_key,
        "root_actor_type": root_type,
        "root_actor_id": root_id,
        "chain_key_ids": [k for k, _, _ in who.chain],
        "chain_actors": [f"{t}:{i}" for _, t, i in who.chain],
        "identity_known": who.identity_known,
        "provider": call["provider"],
        "api_flavor": call["api_flavor"],
        "endpoint": call["endpoint"],
        "requested_model": requested or "",
        "model": served or requested or "",  # a failed call (429, 5xx) has no served model: keep the one asked for
        "stream": call.get("stream", False),
        "status": status,
        "failed": failed,
        "error_type": error_type or "",
        "error_code": call.get("error_code") or "",
        "client_disconnected": call.get("client_disconnected", False),
        "input_tokens": priced.input_tokens,
        "output_tokens": priced.output_tokens,
        "cache_read_tokens": priced.cache_read_tokens,
        "cache_write_tokens": priced.cache_write_tokens,
        "reasoning_tokens": priced.reasoning_tokens,
        "input_cost_usd": input_cost,
        "output_cost_usd": output_cost,
        "cost_usd": cost,
        "unpriced": priced.unpriced,
        "latency_ms": call["latency_ms"],
        "ttft_ms": call.get("ttft_ms"),
        "request_id": request_id,
        "trace_id": trace_id or "",
        "end_user": call.get("end_user") or "",
        "session_id": call.get("session_id") or "",
        "gateway_id": call["gateway_id"],
    }
    return event, row, event_row(event)
