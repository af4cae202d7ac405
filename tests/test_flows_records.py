"""Parse + verify + validate of raw records: every way a record can be bad, and the fast path."""

import base64
import copy
import hashlib

import orjson
import pytest

from flows.records import (
    DEAD_LETTER_MAX_BYTES,
    MAX_REASON_CHARS,
    RecordReader,
    Rejected,
    dead_letter,
    dead_letter_headers,
)
from flows.schema_check import compile_model_check
from schemas import wire
from schemas.models import Actor, EventContext, GatewayEvent, RawCall, UnifiedEvent
from tests.fixtures.flows import OPERATOR_KEYS, SIGNING_KEY, T0, make_call, sign_dict, signed_bytes

reader = RecordReader(SIGNING_KEY)


def test_a_signed_call_comes_back_in_its_json_form():
    data = signed_bytes(make_call())
    assert reader.read(data, b"acme") == orjson.loads(data)


def test_a_gateway_event_passes_through():
    event = UnifiedEvent(
        event_id="01",
        event_type="unauthorized_access_attempt",
        event_source="gateway",
        tenant_id="_system",
        timestamp=T0,
        severity="WARN",
        actor=Actor(type="system", id="anonymous"),
        context=EventContext(request_id="r1"),
        payload={"key_prefix": "tt_abc"},
    )
    record = reader.read(signed_bytes(GatewayEvent(event=event)))
    assert record["kind"] == "event"
    assert record["event"]["event_type"] == "unauthorized_access_attempt"


@pytest.mark.parametrize(
    "value, reason_start",
    [
        (b"", "empty record"),
        (b"{not json", "invalid JSON: "),
        (b"[1, 2]", "schema: record must be a JSON object, got list"),
    ],
)
def test_unreadable_records_are_rejected_with_a_reason(value, reason_start):
    rejected = reader.read(value, b"acme")
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith(reason_start)
    assert rejected.original == value and rejected.key == b"acme"


def test_a_truncated_record_is_invalid_json():
    data = signed_bytes(make_call())
    rejected = reader.read(data[: len(data) // 2])
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("invalid JSON: ")


def test_a_forged_record_is_rejected_for_its_signature():
    record = sign_dict(wire.to_dict(make_call()), key=b"not-the-gateway-key")
    rejected = reader.read(orjson.dumps(record))
    assert rejected.reason == "signature: signature does not match the record (forged or altered)"


def test_an_altered_record_is_rejected_even_if_it_is_otherwise_valid():
    record = sign_dict(wire.to_dict(make_call()))
    record["tenant_id"] = "someone-else"
    assert reader.read(orjson.dumps(record)).reason.startswith("signature: ")


def test_an_unsigned_record_is_rejected():
    record = wire.to_dict(make_call())
    del record["signature"]
    assert reader.read(orjson.dumps(record)).reason == "signature: record has no signature"


def test_a_signed_record_that_breaks_the_schema_names_the_field():
    record = wire.to_dict(make_call())
    del record["tenant_id"]
    rejected = reader.read(orjson.dumps(sign_dict(record)))
    assert rejected.reason == "schema: call.tenant_id: Field required"


def test_schema_errors_name_every_field():
    record = wire.to_dict(make_call())
    record["status"] = 700
    record["chain"] = []
    reason = reader.read(orjson.dumps(sign_dict(record))).reason
    assert "call.status: Input should be less than or equal to 599" in reason
    assert "call.chain: List should have at least 1 item" in reason


def test_an_unknown_kind_is_a_schema_error():
    reason = reader.read(orjson.dumps(sign_dict({"kind": "mystery"}))).reason
    assert reason.startswith("schema: ") and "kind" in reason


def test_non_canonical_but_valid_records_are_normalized_by_pydantic():
    record = wire.to_dict(make_call())
    record["received_at"] = "2026-11-28T13:00:00.123456+01:00"
    accepted = reader.read(orjson.dumps(sign_dict(record)))
    assert accepted["received_at"] == "2026-11-28T12:00:00.123Z"


def test_the_fast_checker_never_accepts_what_pydantic_rejects():
    """Mutate every field of a good record in several ways: whenever the compiled checker
    says yes, pydantic must say yes and give the same JSON form back."""
    check = compile_model_check(RawCall.model_json_schema())
    base = wire.to_dict(make_call(end_user="u1", session_id="s1", first_byte_at=T0))
    assert check(base)
    replacements = [
        None,
        "",
        "x" * 300,
        0,
        -1,
        1.5,
        True,
        [],
        {},
        "2026-13-01T00:00:00.000Z",
        "2026-11-28T12:00:00Z",
        200,
        "human",
        [{"key_id": "k", "actor": {"type": "robot", "id": "r"}}],
    ]
    accepted = rejected = 0
    for field in list(base):
        for replacement in replacements:
            mutated = copy.deepcopy(base)
            mutated[field] = replacement
            if check(mutated):
                accepted += 1
                assert wire.to_dict(RawCall.model_validate(mutated)) == mutated, field
            else:
                rejected += 1
        missing = {k: v for k, v in base.items() if k != field}
        if check(missing):
            RawCall.model_validate(missing)
    mutated = copy.deepcopy(base)
    mutated["unexpected"] = 1
    assert not check(mutated)
    assert accepted and rejected


def test_dead_letter_keeps_reason_position_and_exact_bytes():
    rejected = Rejected("invalid JSON: unexpected end", b'{"a":', b"acme")
    letter = orjson.loads(dead_letter(rejected, "tokentrail.calls.raw", 2, 17))
    assert letter == {
        "reason": "invalid JSON: unexpected end",
        "topic": "tokentrail.calls.raw",
        "partition": 2,
        "offset": 17,
        "original_bytes": 5,
        "original_sha256": hashlib.sha256(b'{"a":').hexdigest(),
        "truncated": False,
        "encoding": "utf-8",
        "original": '{"a":',
    }
    binary = orjson.loads(dead_letter(Rejected("invalid JSON: x", b"\xff\xfe", None), "t", 0, 0))
    assert binary["encoding"] == "base64" and binary["original"] == "//4="


def test_a_dead_letter_larger_than_kafka_allows_is_cut_and_names_the_whole_original():
    for original in (b"\xff" * 900_000, b"\x01" * 900_000, "\u00e9".encode() * 450_000, b'"' * 900_000):
        rejected = Rejected("invalid JSON: " + "x" * 100_000, original, b"acme")
        encoded = dead_letter(rejected, "tokentrail.calls.raw", 1, 99)
        assert len(encoded) <= DEAD_LETTER_MAX_BYTES
        letter = orjson.loads(encoded)
        assert letter["truncated"] is True and letter["original_bytes"] == len(original)
        assert letter["original_sha256"] == hashlib.sha256(original).hexdigest()
        assert (letter["topic"], letter["partition"], letter["offset"]) == ("tokentrail.calls.raw", 1, 99)
        assert len(letter["reason"]) == MAX_REASON_CHARS
        prefix = base64.b64decode(letter["original"]) if letter["encoding"] == "base64" else letter["original"].encode()
        assert original.startswith(prefix) and len(prefix) > DEAD_LETTER_MAX_BYTES // 8
    headers = dead_letter_headers([("h", b"v" * 10_000)] * 10, "schema: bad")
    assert headers[:1] == [("h", b"v" * 10_000)] and headers[-1] == ("tokentrail-reason", b"schema: bad")


def test_rejection_labels_are_a_fixed_set_never_a_key_id():
    from flows.metrics import REASON_KINDS, reason_label
    from tokentrail.control.records import RecordError, decode_identity

    reasons = [f"identity k_{n}: 1 validation error" for n in range(50)]
    try:
        decode_identity(b"k_bad", b'{"key_id": "k_other"}', OPERATOR_KEYS)
    except RecordError as exc:
        reasons.append(str(exc))
    reasons += ["identity record key 'k_x' does not match its key_id 'k_y'", "signature: forged", "weird"]
    assert {reason_label(r) for r in reasons} == {"identity", "signature", "other"}
    assert set(REASON_KINDS) >= {"identity", "signature", "schema", "invalid JSON"}
