"""Gateway logic without a network: usage reading, stream rewriting, records vs. the wire
models, admission, redaction, provider error shapes (the spool: tests/test_gateway_spool.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest

from gateway.errors import error_body, provider_error
from gateway.protection import Denial, Guard
from gateway.records import call_record, event_record, signed_bytes, timestamp
from gateway.redaction import luhn_valid, redact
from gateway.settings import GatewaySettings
from gateway.usage import StreamScanner, body_usage, token_count
from mock_upstream import replies
from schemas import wire
from schemas.models import Actor, Freeze, GatewayEvent, Limits, RawCall
from schemas.signing import KeySet, verify
from tokentrail.control.limits import RateLimiter
from tokentrail.control.records import mint_identity
from tokentrail.control.registry import ControlState, IdentityRegistry

KEY = b"unit-test-signing-key-0123456789abcdef"
KEYS = KeySet(KEY)
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def mock_events(path: str, body: dict, headers: dict | None = None) -> list[bytes]:
    """The mock provider's stream for a request, as the events it would send."""
    return list(replies.reply("POST", path, headers or {}, orjson.dumps(body)).events)


def relay(scanner: StreamScanner, events: list[bytes], piece: int) -> bytes:
    """Feed the stream cut into `piece`-byte chunks (boundaries anywhere), return what the client gets."""
    stream = b"".join(events)
    out = [scanner.feed(stream[i : i + piece]) for i in range(0, len(stream), piece)]
    return b"".join(out) + scanner.finish()


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize("piece", [1, 7, 64, 100_000])
def test_injected_usage_is_read_then_removed_so_the_client_gets_the_original_bytes(piece):
    asked = mock_events("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}})
    plain = b"".join(mock_events("/v1/chat/completions", CHAT))
    scanner = StreamScanner("openai", strip_injected_usage=True)
    out = relay(scanner, asked, piece)
    # The mock's ids hash the request body, which the injection changed; all else is identical.
    asked_id = orjson.loads(asked[0][6:])["id"]
    plain_id = orjson.loads(plain.split(b"\n\n")[0][6:])["id"]
    assert out.replace(asked_id.encode(), plain_id.encode()) == plain
    assert scanner.usage["prompt_tokens"] > 0 and scanner.usage["completion_tokens"] == 16
    assert scanner.served_model == "gpt-4o-mini"


def test_a_stream_that_asked_for_usage_itself_passes_untouched():
    events = mock_events(
        "/v1/completions", {"model": "gpt-4o", "prompt": "x", "stream": True, "stream_options": {"include_usage": True}}
    )
    scanner = StreamScanner("openai")
    assert relay(scanner, events, 13) == b"".join(events)
    assert scanner.usage["total_tokens"] == scanner.usage["prompt_tokens"] + 16


def test_anthropic_stream_usage_merges_message_start_and_message_delta():
    events = mock_events(
        "/v1/messages",
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 40,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
        {"x-mock-usage": "input=100,cached=30,cache_write=20,output=40"},
    )
    scanner = StreamScanner("anthropic")
    assert relay(scanner, events, 5) == b"".join(events)
    assert scanner.usage == {
        "input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 30,
        "output_tokens": 40,
        "service_tier": "standard",
    }
    assert scanner.served_model == "claude-haiku-4-5"
    assert token_count(scanner.usage) == 190


def test_responses_stream_usage_comes_from_response_completed():
    events = mock_events("/v1/responses", {"model": "gpt-4.1", "input": "hi", "stream": True})
    scanner = StreamScanner("openai")
    relay(scanner, events, 50)
    assert scanner.usage["output_tokens"] == 16 and scanner.served_model == "gpt-4.1"


def test_stream_errors_are_recorded():
    scanner = StreamScanner("anthropic")
    scanner.feed(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"x"}}\n\n')
    assert scanner.error_type == "overloaded_error"
    scanner = StreamScanner("openai")
    scanner.feed(b'data: {"error":{"message":"boom","type":"server_error","code":"internal"}}\n\n')
    assert (scanner.error_type, scanner.error_code) == ("server_error", "internal")


def test_body_usage_small_and_large_bodies():
    body = replies.reply(
        "POST",
        "/v1/chat/completions",
        {},
        orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    ).body
    usage, model = body_usage(body)
    assert model == "gpt-4o" and usage["completion_tokens"] == 16
    big = replies.reply(
        "POST",
        "/v1/embeddings",
        {},
        orjson.dumps({"model": "text-embedding-3-small", "input": ["a", "b", "c", "d"] * 8}),
    ).body
    assert len(big) > 64 * 1024
    usage, model = body_usage(big)
    assert model == "text-embedding-3-small" and usage["prompt_tokens"] == usage["total_tokens"] > 0
    pretty = orjson.dumps(orjson.loads(big), option=orjson.OPT_INDENT_2)
    assert body_usage(pretty) == (usage, model)
    assert body_usage(b"not json") == (None, None)


def full_call(**overrides):
    identity, _ = mint_identity("acme", Actor(type="agent", id="bot"), None, NOW)
    fields = dict(
        call_id="01J0000000000000000000000",
        gateway_id="gw-1",
        received_at=1764331200.1234,
        first_byte_at=1764331200.2,
        completed_at=1764331200.9,
        tenant_id="acme",
        key_id=identity.key_id,
        chain=[link.model_dump() for link in identity.chain()],
        request_id="req-1",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        end_user="u-7",
        session_id="s-1",
        provider="openai",
        api_flavor="chat",
        endpoint="/v1/chat/completions",
        requested_model="gpt-4o",
        served_model="gpt-4o-2024",
        context_hash="3f2a9c0d1e4b5a67",
        stream=True,
        status=200,
        error_type=None,
        error_code=None,
        client_disconnected=False,
        usage={"prompt_tokens": 3, "completion_tokens": 4},
        latency_ms=12.5,
        ttft_ms=3.25,
        request_body=None,
        response_body=None,
    )
    return call_record(**{**fields, **overrides})


def test_call_record_is_exactly_the_wire_form_of_a_raw_call_and_verifies():
    record = full_call()
    model = wire.validate_adapter(wire.RAW_RECORD, record, "RawRecord")
    assert isinstance(model, RawCall)
    assert wire.to_dict(model) == record
    value = orjson.loads(signed_bytes(record, KEYS))
    verify(value, KEY)
    value["usage"]["completion_tokens"] = 400
    with pytest.raises(ValueError, match="forged or altered"):
        verify(value, KEY)


def test_failed_call_without_first_byte_also_matches():
    record = full_call(
        first_byte_at=None,
        ttft_ms=None,
        status=502,
        error_type="server_error",
        error_code="upstream_unreachable",
        usage=None,
        requested_model=None,
        served_model=None,
    )
    assert wire.to_dict(RawCall.model_validate(record)) == record


def test_timestamps_truncate_to_milliseconds_like_the_models():
    assert timestamp(1764331200.9999) == "2025-11-28T12:00:00.999Z"
    assert timestamp(0.001) == "1970-01-01T00:00:00.001Z"


def test_event_record_is_a_valid_gateway_event():
    record = event_record(
        event_type="unauthorized_access_attempt",
        tenant_id=None,
        actor=None,
        at=time.time(),
        request_id="r",
        trace_id=None,
        payload={"reason": "unknown"},
    )
    model = wire.validate_adapter(wire.RAW_RECORD, record, "RawRecord")
    assert isinstance(model, GatewayEvent) and wire.to_dict(model) == record
    assert model.event.tenant_id == "_system" and model.event.actor.id == "anonymous"
    verify(orjson.loads(signed_bytes(record, KEYS)), KEY)


def guard_with(*records):
    registry, controls = IdentityRegistry(), ControlState()
    root, root_key = mint_identity("acme", Actor(type="human", id="alice"), None, NOW)
    child, child_key = mint_identity("acme", Actor(type="agent", id="bot"), root, NOW)
    for identity in (root, child):
        registry.apply(identity.key_id, identity)
    for record in records:
        controls.apply(f"{record.kind}:{record.scope}", record)
    return Guard(registry, controls, RateLimiter()), registry, controls, (root, root_key), (child, child_key)


def test_guard_admits_a_live_key_with_its_chain():
    guard, *_, (root, _), (child, child_key) = guard_with()
    entry = guard.admit(child_key, 0.0)
    assert [link["key_id"] for link in entry.chain] == [root.key_id, child.key_id]


def test_guard_refusals_never_leak_the_secret():
    guard, registry, controls, (root, root_key), (child, child_key) = guard_with()
    unknown = guard.admit("tt_0123456789abcdef_secretsecret", 0.0)
    assert isinstance(unknown, Denial) and unknown.status == 401 and unknown.entry is None
    assert "secretsecret" not in str(unknown.payload) and unknown.payload["key_prefix"] == "tt_0123456789abcdef"
    assert guard.admit(None, 0.0).reason == "missing"
    registry.apply(root.key_id, root.model_copy(update={"revoked_at": NOW}))
    revoked = guard.admit(root_key, 0.0)
    assert (revoked.status, revoked.reason, revoked.entry.tenant_id) == (401, "revoked", "acme")


def test_guard_freeze_then_limits():
    freeze = Freeze(scope="key:PLACEHOLDER", frozen=True, reason="leak", changed_at=NOW)
    guard, _, controls, _, (child, child_key) = guard_with()
    controls.apply(f"freeze:key:{child.key_id}", freeze.model_copy(update={"scope": f"key:{child.key_id}"}))
    denial = guard.admit(child_key, 0.0)
    assert (denial.status, denial.event_type, denial.message) == (
        403,
        "protection_decision",
        "this key is frozen: leak",
    )
    controls.apply(f"freeze:key:{child.key_id}", None)
    controls.apply("limits:tenant:acme", Limits(scope="tenant:acme", requests_per_minute=2, changed_at=NOW))
    admitted = [guard.admit(child_key, 0.0) for _ in range(2)]  # within the limit: entries, not denials
    assert [(type(a).__name__, getattr(a, "key_id", None)) for a in admitted] == [("KeyEntry", child.key_id)] * 2
    limited = guard.admit(child_key, 0.0)
    assert (limited.status, limited.retry_after) == (429, 30)


def test_token_limit_is_charged_from_usage():
    guard, _, controls, _, (child, child_key) = guard_with()
    controls.apply("limits:tenant:acme", Limits(scope="tenant:acme", tokens_per_minute=60, changed_at=NOW))
    entry = guard.admit(child_key, 0.0)
    guard.charge(entry, 120, 0.0)
    assert guard.admit(child_key, 0.0).retry_after == 61
    assert guard.admit(child_key, 61.0).key_id == child.key_id


def test_redaction_masks_keys_emails_phones_and_luhn_valid_cards_only():
    text = (
        "key sk-proj-abcdefghijklmnop1234 and sk-ant-api03-abcdefghijkl, Authorization: Bearer abc.def-123456, "
        "tt_0123456789abcdef_c2VjcmV0LXNlY3JldA; mail bob.smith+x@example.co.uk; call +1 415-555-0132 or "
        "(415) 555-0132; card 4111 1111 1111 1111 or 4242-4242-4242-4242; order 4111111111111112; "
        "tokens 1234567890, date 2026-11-28, pi 3.14159265358979"
    )
    masked = redact(text)
    for secret in ("sk-proj", "sk-ant", "abc.def", "c2VjcmV0", "bob.smith", "555-0132", "4111 1111", "4242-4242"):
        assert secret not in masked, secret
    assert masked.count("[REDACTED:api_key]") == 4
    assert masked.count("[REDACTED:card]") == 2 and masked.count("[REDACTED:phone]") == 2
    for kept in ("4111111111111112", "1234567890", "2026-11-28", "3.14159265358979"):
        assert kept in masked, kept
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_gateway_errors_have_each_providers_shape():
    body, error_type, code = error_body("openai", 429, "slow down")
    assert orjson.loads(body) == {
        "error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    }
    body, error_type, code = error_body("anthropic", 401, "who?")
    assert orjson.loads(body) == {"type": "error", "error": {"type": "authentication_error", "message": "who?"}}
    assert provider_error(body) == ("authentication_error", None)
    assert provider_error(b"<html>") == (None, None)


def test_settings_read_provider_keys_without_prefix_and_normalize_urls(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("TOKENTRAIL_UPSTREAM_OPENAI_URL", "http://127.0.0.1:9/v1/")
    settings = GatewaySettings()
    assert settings.openai_api_key.get_secret_value() == "sk-x"
    assert settings.upstream_openai_url == "http://127.0.0.1:9"
    assert "sk-x" not in repr(settings)
    monkeypatch.setenv("TOKENTRAIL_UPSTREAM_ANTHROPIC_URL", "ftp://x")
    with pytest.raises(Exception, match="http:// or https://"):
        GatewaySettings()


@pytest.mark.parametrize("indent", [False, True])
def test_body_usage_of_a_large_body_is_the_top_level_one_whatever_metadata_holds(indent):
    """A client-controlled `metadata` after `usage` (the Responses object's order), keys
    named like ours inside content strings and nested objects: only the top-level values count."""
    answer = {
        "object": "response",
        "output": [{"type": "message", "content": [{"text": 'say "usage": {"input_tokens": 1} ' * 4000}]}],
        "model": "gpt-4.1",
        "usage": {"input_tokens": 7, "output_tokens": 9},
        "metadata": {"usage": {"input_tokens": 0}, "model": "cheap", "note": 'a"}{[usage é'},
    }
    body = orjson.dumps(answer, option=orjson.OPT_INDENT_2 if indent else 0)
    assert len(body) > 64 * 1024
    assert body_usage(body) == ({"input_tokens": 7, "output_tokens": 9}, "gpt-4.1")
    many = {**answer, "metadata": {f"k{i}": {"usage": {"input_tokens": i}} for i in range(40)}}
    assert body_usage(orjson.dumps(many)) == ({"input_tokens": 7, "output_tokens": 9}, "gpt-4.1")
    without = {k: v for k, v in answer.items() if k != "usage"}
    assert body_usage(orjson.dumps(without)) == (None, "gpt-4.1")
