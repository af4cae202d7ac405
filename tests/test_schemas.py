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


@pytest.mark.parametrize("length", [1, 16, 63, 64, 65, 200])
def test_the_precomputed_hmac_is_hmac_sha256(length):
    """`HmacSha256` keeps the padded keys' states instead of setting HMAC up per record: it must
    give exactly what the standard library's HMAC gives, for keys shorter than, as long as and
    longer than SHA-256's block (hashed first), over any message."""
    import hashlib
    import hmac
    import random

    rng = random.Random(length)
    key = rng.randbytes(length)
    mac = signing.HmacSha256(key)
    for size in (0, 1, 55, 64, 1000, 70_000):
        message = rng.randbytes(size)
        assert mac.hexdigest(message) == hmac.new(key, message, hashlib.sha256).hexdigest()
        assert mac.hexdigest(message) == mac.hexdigest(message)  # the kept states are not consumed


def test_signed_bytes_are_the_canonical_form_with_the_signature_last_and_verify():
    """`KeySet.signed` serializes once: the canonical bytes, then the signature as the last field.
    The result verifies under the key set and under the plain key, any `signature` already in the
    record (events carry an empty one) is replaced, and an empty record still gives valid JSON."""
    keys = signing.KeySet(KEY)
    record = {**wire.to_dict(make_call()), "signature": ""}
    value = keys.signed(dict(record))
    del record["signature"]
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    parsed = orjson.loads(value)
    assert value.startswith(canonical[:-1]) and list(parsed)[-1] == "signature"
    assert parsed["signature"] == keys.sign(record) and parsed["signature"].startswith(keys.current_id + ":")
    signing.verify(parsed, keys)
    signing.verify(orjson.loads(value), KEY)
    assert orjson.loads(keys.signed({})) == {"signature": keys.sign({})}


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
