"""Contracts: round trips, signatures, field-named errors, generated JSON Schema freshness."""

from datetime import UTC, datetime

import orjson
import pytest

from schemas import generate, signing, wire
from schemas.ids import new_id
from schemas.models import (
    Actor,
    ChainLink,
    EventContext,
    Freeze,
    GatewayEvent,
    RawCall,
    UnifiedEvent,
    control_key,
    format_timestamp,
)

KEY = b"test-signing-key"
NOW = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


def make_call(**overrides) -> RawCall:
    fields = dict(
        call_id=new_id(),
        gateway_id="gw-1",
        received_at=NOW,
        completed_at=NOW,
        tenant_id="acme",
        key_id="k_agent",
        chain=[
            ChainLink(key_id="k_human", actor=Actor(type="human", id="alice")),
            ChainLink(key_id="k_agent", actor=Actor(type="agent", id="planner")),
        ],
        request_id="req-1",
        provider="openai",
        api_flavor="chat",
        endpoint="/v1/chat/completions",
        requested_model="gpt-4o",
        served_model="gpt-4o-2024-08-06",
        status=200,
        usage={"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}},
        latency_ms=12.5,
        request_body="héllo ✓",
    )
    fields.update(overrides)
    return RawCall(**fields)


def signed_dict(call: RawCall) -> dict:
    record = wire.to_dict(call)
    record["signature"] = signing.sign(record, KEY)
    return record


def test_raw_call_round_trips_through_json_and_verifies():
    record = signed_dict(make_call())
    data = orjson.dumps(record)
    decoded = wire.decode_json(data)
    signing.verify(decoded, KEY)
    call = wire.validate_adapter(wire.RAW_RECORD, decoded, "RawRecord")
    assert isinstance(call, RawCall)
    assert call.chain[0].actor.id == "alice"
    assert call.received_at == NOW.replace(microsecond=123000)
    assert wire.to_dict(call) == record


def test_timestamps_are_utc_milliseconds():
    assert format_timestamp(NOW) == "2026-11-28T12:00:00.123Z"
    assert wire.to_dict(make_call())["received_at"] == "2026-11-28T12:00:00.123Z"


def test_changing_any_byte_fails_verification():
    record = signed_dict(make_call())
    data = orjson.dumps(record)
    position = data.index(b'"tenant_id":"acme"') + len(b'"tenant_id":"')
    tampered = data[:position] + b"b" + data[position + 1 :]
    with pytest.raises(signing.InvalidSignature):
        signing.verify(orjson.loads(tampered), KEY)


def test_wrong_key_and_missing_signature_fail():
    record = signed_dict(make_call())
    with pytest.raises(signing.InvalidSignature, match="does not match"):
        signing.verify(record, b"other-key")
    del record["signature"]
    with pytest.raises(signing.InvalidSignature, match="no signature"):
        signing.verify(record, KEY)


def test_signature_is_independent_of_key_order():
    record = signed_dict(make_call())
    reordered = dict(reversed(list(record.items())))
    signing.verify(reordered, KEY)


def test_missing_required_field_is_named():
    record = wire.to_dict(make_call())
    del record["tenant_id"]
    with pytest.raises(wire.SchemaError, match=r"call\.tenant_id: Field required"):
        wire.validate_adapter(wire.RAW_RECORD, record, "RawRecord")


def test_naive_timestamp_and_unknown_field_are_rejected():
    record = wire.to_dict(make_call())
    record["received_at"] = "2026-11-28T12:00:00"
    record["surprise"] = 1
    with pytest.raises(wire.SchemaError) as info:
        wire.validate_adapter(wire.RAW_RECORD, record, "RawRecord")
    assert "received_at" in str(info.value) and "surprise" in str(info.value)


def test_malformed_json_is_a_schema_error():
    with pytest.raises(wire.SchemaError, match="not valid JSON"):
        wire.decode_json(b'{"call_id": ')


def test_unified_event_requires_owner_and_known_type():
    event = UnifiedEvent(
        event_id=new_id(),
        event_type="protection_decision",
        event_source="gateway",
        tenant_id="acme",
        timestamp=NOW,
        severity="WARN",
        actor=Actor(type="agent", id="planner"),
        context=EventContext(request_id="req-1"),
        payload={"decision": "deny", "reason": "frozen"},
    )
    wrapped = GatewayEvent(event=event)
    parsed = wire.validate_adapter(wire.RAW_RECORD, orjson.loads(wire.dumps(wrapped)), "RawRecord")
    assert parsed == wrapped
    broken = wire.to_dict(event)
    broken["actor"] = {"type": "robot", "id": ""}
    with pytest.raises(wire.SchemaError) as info:
        wire.validate(UnifiedEvent, broken)
    assert "actor.type" in str(info.value) and "actor.id" in str(info.value)


def test_control_records_are_keyed_by_kind_and_scope():
    freeze = Freeze(scope="tenant:acme", frozen=True, changed_at=NOW)
    assert control_key(freeze) == "freeze:tenant:acme"
    parsed = wire.validate_adapter(wire.CONTROL_RECORD, orjson.loads(wire.dumps(freeze)), "ControlRecord")
    assert parsed == freeze
    with pytest.raises(wire.SchemaError, match="scope"):
        wire.validate_adapter(wire.CONTROL_RECORD, {**wire.to_dict(freeze), "scope": "everyone"}, "ControlRecord")


def test_event_ids_sort_by_creation():
    ids = [new_id() for _ in range(50)]
    assert ids == sorted(ids)


def test_generated_json_schemas_are_up_to_date():
    for name, content in generate.render().items():
        committed = generate.JSON_DIR / name
        assert committed.exists(), f"{name} missing: run `make schemas`"
        assert committed.read_bytes() == content, f"{name} is out of date: run `make schemas`"
