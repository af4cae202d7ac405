"""The records the gateway sends to `tokentrail.calls.raw`, built as plain dicts and signed.

The hot path builds the JSON form of `RawCall` / `GatewayEvent` directly (no pydantic per
request); `tests/test_gateway_unit.py` validates these dicts against the models, so the
two cannot drift apart. Timestamps are epoch seconds turned into the wire's RFC 3339 UTC
milliseconds.
"""

from __future__ import annotations

import time
from typing import Any

from schemas.ids import new_id
from schemas.models import SCHEMA_VERSION, SYSTEM_TENANT
from schemas.signing import KeySet

ANONYMOUS = {"type": "system", "id": "anonymous"}


_second_cache: list[int | str] = [-1, ""]


def timestamp(epoch: float) -> str:
    """`2026-11-28T11:47:49.123Z` (milliseconds truncated, as the models normalize them).
    The formatted second is cached: a request formats three timestamps, mostly in one second."""
    millis = int(epoch * 1000)
    second = millis // 1000
    if second != _second_cache[0]:
        _second_cache[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))]
    return f"{_second_cache[1]}{millis % 1000:03d}Z"


def call_record(
    *,
    call_id: str,
    gateway_id: str,
    received_at: float,
    first_byte_at: float | None,
    completed_at: float,
    tenant_id: str,
    key_id: str,
    chain: list[dict[str, Any]],
    request_id: str,
    trace_id: str | None,
    end_user: str | None,
    session_id: str | None,
    provider: str,
    api_flavor: str,
    endpoint: str,
    requested_model: str | None,
    served_model: str | None,
    stream: bool,
    status: int,
    error_type: str | None,
    error_code: str | None,
    client_disconnected: bool,
    usage: dict[str, Any] | None,
    latency_ms: float,
    ttft_ms: float | None,
    request_body: str | None,
    response_body: str | None,
    context_hash: str | None = None,
) -> dict[str, Any]:
    """The JSON form of a RawCall, exactly as `wire.to_dict(RawCall(...))` gives it, unsigned."""
    return {
        "kind": "call",
        "schema_version": SCHEMA_VERSION,
        "call_id": call_id,
        "gateway_id": gateway_id,
        "received_at": timestamp(received_at),
        "first_byte_at": timestamp(first_byte_at) if first_byte_at is not None else None,
        "completed_at": timestamp(completed_at),
        "tenant_id": tenant_id,
        "key_id": key_id,
        "chain": chain,
        "request_id": request_id,
        "trace_id": trace_id,
        "end_user": end_user,
        "session_id": session_id,
        "provider": provider,
        "api_flavor": api_flavor,
        "endpoint": endpoint,
        "requested_model": requested_model,
        "served_model": served_model,
        "context_hash": context_hash,
        "stream": stream,
        "status": status,
        "error_type": error_type,
        "error_code": error_code,
        "client_disconnected": client_disconnected,
        "usage": usage,
        "latency_ms": latency_ms,
        "ttft_ms": ttft_ms,
        "request_body": request_body,
        "response_body": response_body,
        "signature": "",
    }


def event_record(
    *,
    event_type: str,
    tenant_id: str | None,
    actor: dict[str, str] | None,
    at: float,
    request_id: str,
    trace_id: str | None,
    payload: dict[str, Any],
    severity: str = "WARN",
) -> dict[str, Any]:
    """The JSON form of a GatewayEvent wrapping a UnifiedEvent, unsigned. Without a tenant
    (unknown key) the event belongs to the system tenant and an anonymous system actor."""
    return {
        "kind": "event",
        "schema_version": SCHEMA_VERSION,
        "event": {
            "event_id": new_id(),
            "event_type": event_type,
            "event_source": "gateway",
            "tenant_id": tenant_id or SYSTEM_TENANT,
            "timestamp": timestamp(at),
            "severity": severity,
            "actor": actor if tenant_id and actor else ANONYMOUS,
            "context": {"request_id": request_id, "trace_id": trace_id},
            "payload": payload,
        },
        "signature": "",
    }


def signed_bytes(record: dict[str, Any], keys: KeySet) -> bytes:
    """Sign with the current signing key (`<key id>:<hex>`, `schemas.signing`) and serialize:
    the value put on the topic (`KeySet.signed`: canonical form, signature last)."""
    return keys.signed(record)
