"""Call events in the shape the enrich flow writes them (`flows.events.call_outputs`), built
from a few numbers: the input of the detection tests and of `bench/detection`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from schemas.models import format_timestamp


def call_event(
    tenant_id: str,
    at: float,
    *,
    key_id: str = "key-1",
    actor: tuple[str, str] = ("human", "alice"),
    root: tuple[str, str] | None = None,
    status: int = 200,
    error_type: str | None = None,
    error_code: str | None = None,
    provider: str = "openai",
    model: str = "gpt-4o-mini",
    cost_usd: float = 0.001,
    context_hash: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One `llm_call` / `llm_call_failed` UnifiedEvent at epoch seconds `at`; the chain is
    root then caller (root defaults to the caller itself)."""
    root = root or actor
    event_id = event_id or str(uuid.uuid4())
    chain = [{"key_id": key_id, "actor": {"type": actor[0], "id": actor[1]}}]
    if root != actor:
        chain.insert(0, {"key_id": f"root-{root[1]}", "actor": {"type": root[0], "id": root[1]}})
    failed = status >= 400 or bool(error_type)
    payload: dict[str, Any] = {
        "call_id": event_id,
        "key_id": key_id,
        "chain": chain,
        "root_actor": {"type": root[0], "id": root[1]},
        "provider": provider,
        "model": model,
        "status": status,
        "error_type": error_type,
        "error_code": error_code,
        "cost_usd": f"{cost_usd:.10f}",
    }
    if context_hash is not None:
        payload["context_hash"] = context_hash
    return {
        "event_id": event_id,
        "event_type": "llm_call_failed" if failed else "llm_call",
        "event_source": "flows",
        "tenant_id": tenant_id,
        "timestamp": format_timestamp(datetime.fromtimestamp(at, UTC)),
        "severity": "ERROR" if status >= 500 else "WARN" if failed else "INFO",
        "actor": {"type": actor[0], "id": actor[1]},
        "context": {"request_id": f"req-{event_id}", "trace_id": None},
        "payload": payload,
    }
