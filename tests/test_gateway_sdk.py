"""The official SDKs through a real gateway process to the mock provider, records on real Kafka.

Answers must be the bytes the mock gives when called directly; every call must leave one
signed RawCall with the right owner, chain and usage.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC

import anthropic
import openai
import orjson
import pytest

from schemas import wire
from schemas.models import Actor, Capture, Freeze, Limits, RawCall
from tests.fixtures.gateway import MAX_BODY_BYTES, gateway_env, raw_records, spawn_gateway, wait_for_key

pytestmark = pytest.mark.kafka
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 24, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def keys(gateway, control):
    """A human's key and an agent key acting on its behalf, both live on the gateway."""
    root, root_key = control.create_key("acme", Actor(type="human", id="alice"))
    child, child_key = control.create_key("acme", Actor(type="agent", id="planner"), root.key_id)
    wait_for_key(gateway, child_key)
    return {"root": root, "root_key": root_key, "child": child, "child_key": child_key}


def openai_pair(gateway, mock_upstream, key):
    return (
        openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0),
        openai.OpenAI(base_url=mock_upstream.url + "/v1", api_key="direct", max_retries=0),
    )


def anthropic_pair(gateway, mock_upstream, key):
    return (
        anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0),
        anthropic.Anthropic(base_url=mock_upstream.url, api_key="direct", max_retries=0),
    )


def streamed(resource_of, client, **kwargs) -> bytes:
    with resource_of(client).with_streaming_response.create(**kwargs) as response:
        return b"".join(response.iter_bytes())


def test_openai_sdk_gets_the_mocks_bytes_and_each_call_is_recorded(gateway, mock_upstream, keys, kafka_topics):
    via, direct = openai_pair(gateway, mock_upstream, keys["child_key"])
    calls = [
        (lambda c: c.chat.completions, {**CHAT, "user": "end-user-42"}),
        (lambda c: c.completions, {"model": "gpt-4o-mini", "prompt": "hello", "max_tokens": 5}),
        (lambda c: c.embeddings, {"model": "text-embedding-3-small", "input": ["a", "b"]}),
        (lambda c: c.responses, {"model": "gpt-4.1", "input": "hello"}),
    ]
    for resource_of, kwargs in calls:
        assert (
            resource_of(via).with_raw_response.create(**kwargs).http_response.content
            == resource_of(direct).with_raw_response.create(**kwargs).http_response.content
        )
    assert (
        via.models.with_raw_response.list().http_response.content
        == direct.models.with_raw_response.list().http_response.content
    )

    # Streams the client asked usage for, and the Responses stream, pass byte for byte.
    asked = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    assert streamed(lambda c: c.chat.completions, via, **asked) == streamed(
        lambda c: c.chat.completions, direct, **asked
    )
    stream_responses = {"model": "gpt-4.1", "input": "hello", "stream": True}
    assert streamed(lambda c: c.responses, via, **stream_responses) == streamed(
        lambda c: c.responses, direct, **stream_responses
    )
    # A stream that did not ask for usage: the gateway asks for it and removes it again. The
    # mock's ids hash the request body (which then differs), everything else is the same.
    plain = {**CHAT, "stream": True}
    through, straight = (
        streamed(lambda c: c.chat.completions, via, **plain),
        streamed(lambda c: c.chat.completions, direct, **plain),
    )
    first_id = lambda stream: orjson.loads(stream.split(b"\n\n")[0][6:])["id"].encode()  # noqa: E731
    assert b'"usage"' not in through
    assert through.replace(first_id(through), first_id(straight)) == straight
    chunks = list(via.chat.completions.create(**plain))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("lorem ipsum")

    records = raw_records(kafka_topics, expected=9)
    assert len(records) == 9 and all(r["kind"] == "call" for r in records)
    for record in records:
        assert wire.to_dict(RawCall.model_validate(record)) == record
        assert record["tenant_id"] == "acme" and record["key_id"] == keys["child"].key_id
        assert [link["key_id"] for link in record["chain"]] == [keys["root"].key_id, keys["child"].key_id]
        assert [link["actor"]["id"] for link in record["chain"]] == ["alice", "planner"]
        assert record["status"] == 200 and record["provider"] == "openai"
    by_endpoint = {}
    for record in records:
        by_endpoint.setdefault((record["endpoint"], record["stream"]), []).append(record)
    chat = by_endpoint[("/v1/chat/completions", False)][0]
    assert chat["end_user"] == "end-user-42" and chat["api_flavor"] == "chat"
    assert chat["usage"]["completion_tokens"] == 16 and chat["served_model"] == "gpt-4o-mini"
    for stream in by_endpoint[("/v1/chat/completions", True)]:
        assert stream["usage"]["completion_tokens"] == 16 and stream["ttft_ms"] <= stream["latency_ms"]
    assert by_endpoint[("/v1/completions", False)][0]["usage"]["completion_tokens"] == 5
    assert by_endpoint[("/v1/completions", False)][0]["api_flavor"] == "chat"
    assert by_endpoint[("/v1/embeddings", False)][0]["api_flavor"] == "embeddings"
    assert by_endpoint[("/v1/responses", True)][0]["usage"]["output_tokens"] == 16
    assert by_endpoint[("/v1/models", False)][0]["usage"] is None
    assert len({r["call_id"] for r in records}) == 9


def test_with_the_log_off_a_stream_is_recorded_after_its_last_byte_with_its_usage(
    mock_upstream, control, kafka_topics, tmp_path
):
    """With TOKENTRAIL_SPOOL_WRITE_AHEAD=false a stream is recorded after its last byte (off
    the answer's latency, as before the log; with the log the record is written ahead of it):
    still one record per call, with the provider's usage, and the same bytes as the mock's."""
    env = {**gateway_env(kafka_topics, mock_upstream.url), "TOKENTRAIL_SPOOL_WRITE_AHEAD": "false"}
    gateway = spawn_gateway(env, tmp_path / "gateway-home")
    try:
        _, key = control.create_key("acme", Actor(type="human", id="bob"))
        wait_for_key(gateway, key)
        via, direct = openai_pair(gateway, mock_upstream, key)
        asked = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        assert streamed(lambda c: c.chat.completions, via, **asked) == streamed(
            lambda c: c.chat.completions, direct, **asked
        )
        chunks = list(via.chat.completions.create(**CHAT, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("lorem ipsum")
        via.chat.completions.create(**CHAT)
    finally:
        gateway.stop()  # SIGTERM flushes to Kafka: every record is on the topic below
    records = raw_records(kafka_topics, expected=3)
    assert len(records) == 3 and len({r["call_id"] for r in records}) == 3
    streams = [r for r in records if r["stream"]]
    assert len(streams) == 2
    for record in records:
        assert record["status"] == 200 and not record["client_disconnected"]
        assert record["usage"]["completion_tokens"] == 16


@pytest.mark.parametrize("chunk_delay_ms", ["0", "5"])
def test_a_streams_last_event_reaches_the_client_once_whether_or_not_the_upstreams_end_came_with_it(
    gateway, mock_upstream, keys, kafka_topics, chunk_delay_ms
):
    """The gateway holds an answer's last bytes back when they came with the upstream's end (0:
    the mock sends the whole stream at once) and sends them with the end of the chunked body,
    after the record is written; when the end comes later (5 ms between the mock's writes) the
    last event went out already. Either way the client gets the mock's bytes, each once."""
    via, direct = anthropic_pair(gateway, mock_upstream, keys["child_key"])
    timing = {"x-mock-chunk-delay-ms": chunk_delay_ms}
    through, straight = (
        streamed(lambda c: c.messages, client, **MESSAGE, stream=True, extra_headers=timing) for client in (via, direct)
    )
    assert through == straight and through.endswith(b'data: {"type":"message_stop"}\n\n')
    [record] = raw_records(kafka_topics, expected=1)
    assert record["stream"] is True and record["usage"]["output_tokens"] > 0


def test_anthropic_sdk_gets_the_mocks_bytes_and_usage_is_recorded(gateway, mock_upstream, keys, kafka_topics):
    via, direct = anthropic_pair(gateway, mock_upstream, keys["root_key"])
    headers = {"x-mock-usage": "input=120,cached=30,cache_write=10,output=24"}
    assert (
        via.messages.with_raw_response.create(**MESSAGE, extra_headers=headers).http_response.content
        == direct.messages.with_raw_response.create(**MESSAGE, extra_headers=headers).http_response.content
    )
    stream = {**MESSAGE, "stream": True, "extra_headers": headers}
    assert streamed(lambda c: c.messages, via, **stream) == streamed(lambda c: c.messages, direct, **stream)
    with via.messages.stream(**MESSAGE) as events:
        assert events.get_final_message().usage.output_tokens == 24
    assert (
        via.models.with_raw_response.list().http_response.content
        == direct.models.with_raw_response.list().http_response.content
    )

    records = raw_records(kafka_topics, expected=4)
    assert len(records) == 4
    messages = [r for r in records if r["endpoint"] == "/v1/messages"]
    assert all(r["provider"] == "anthropic" and r["api_flavor"] == "default" for r in records)
    assert [r["chain"] for r in records] == [
        [{"key_id": keys["root"].key_id, "actor": {"type": "human", "id": "alice"}}]
    ] * 4
    expected_usage = {
        "input_tokens": 120,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 30,
        "output_tokens": 24,
        "service_tier": "standard",
    }
    assert [r["usage"] for r in messages[:2]] == [expected_usage, expected_usage]
    assert [r["stream"] for r in messages] == [False, True, True]


def test_revoked_key_is_refused_within_a_second_with_an_event(gateway, mock_upstream, keys, control, kafka_topics):
    via, _ = openai_pair(gateway, mock_upstream, keys["child_key"])
    via.chat.completions.create(**CHAT)
    control.revoke_key(keys["child"].key_id)
    revoked_at = time.monotonic()
    served_after_revoke = 0
    while True:
        try:
            via.chat.completions.create(**CHAT)
            served_after_revoke += 1
        except openai.AuthenticationError as exc:
            assert exc.status_code == 401 and exc.body["code"] == "invalid_api_key"
            break
        assert time.monotonic() - revoked_at < 1.0, "revocation took effect after more than a second"
        time.sleep(0.01)
    refused_after = time.monotonic() - revoked_at
    assert refused_after < 1.0
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="tt_0123456789abcdef_guess", max_retries=0).models.list()
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-not-ours", max_retries=0).messages.create(**MESSAGE)

    # One call before the revoke, those served after it, the revoked key's refusal event, and
    # at most one event for this client's unknown keys: failed attempts become one event per
    # client address and tenant per interval, and the gateway process may already have opened
    # that interval for an earlier test's probes (then the guesses are only counted).
    certain = 1 + served_after_revoke + 1
    records = raw_records(kafka_topics, expected=certain + 1, timeout=3)
    assert len(records) in (certain, certain + 1)
    events = [r["event"] for r in records if r["kind"] == "event"]
    revoked = next(e for e in events if e["payload"]["reason"] == "revoked")
    assert revoked["event_type"] == "unauthorized_access_attempt" and revoked["tenant_id"] == "acme"
    assert revoked["actor"] == {"type": "agent", "id": "planner"}
    assert revoked["payload"]["attempts"] == 1 and revoked["payload"]["client_ip"] == "127.0.0.1"
    # Failed attempts are one event per client address and tenant per interval, all counted:
    # the unknown keys share the _system event with wait_for_key's probes.
    unknown = [e for e in events if e["payload"]["reason"] in ("unknown", "malformed")]
    assert len(events) == 1 + len(unknown) and len(unknown) == len(records) - certain
    assert [(e["tenant_id"], e["actor"]["id"]) for e in unknown] == [("_system", "anonymous")] * len(unknown)
    samples = gateway.metrics()
    assert samples['tokentrail_gateway_denied_total{reason="malformed"}'] == 1.0
    assert samples['tokentrail_gateway_denied_total{reason="unknown"}'] >= 1.0
    assert all("guess" not in orjson.dumps(e).decode() and "not-ours" not in orjson.dumps(e).decode() for e in events)
    # Refused requests are events, never calls.
    assert sum(r["kind"] == "call" for r in records) == 1 + served_after_revoke


def test_frozen_tenant_gets_403_and_limits_give_429_with_retry_after(
    gateway, mock_upstream, keys, control, kafka_topics
):
    via, _ = openai_pair(gateway, mock_upstream, keys["child_key"])
    via_anthropic, _ = anthropic_pair(gateway, mock_upstream, keys["root_key"])
    sent = 0  # every request is recorded: a call when served, a protection_decision when refused

    def status(call) -> int:
        nonlocal sent
        sent += 1
        return _status(call)

    control.put_control(Freeze(scope="tenant:acme", frozen=True, reason="incident 7", changed_at=_now()))
    frozen_at = time.monotonic()
    _eventually(lambda: status(lambda: via.chat.completions.create(**CHAT)) == 403)
    assert time.monotonic() - frozen_at < 1.0, "the freeze took effect after more than a second (README)"
    with pytest.raises(openai.PermissionDeniedError, match="frozen: incident 7"):
        via.chat.completions.create(**CHAT)
    with pytest.raises(anthropic.PermissionDeniedError):
        via_anthropic.messages.create(**MESSAGE)
    control.put_control(Freeze(scope="tenant:acme", frozen=False, changed_at=_now()))
    _eventually(lambda: status(lambda: via.chat.completions.create(**CHAT)) == 200)

    control.put_control(Limits(scope=f"key:{keys['root'].key_id}", requests_per_minute=2, changed_at=_now()))
    _eventually(lambda: status(lambda: via_anthropic.messages.create(**MESSAGE)) == 429)
    with pytest.raises(anthropic.RateLimitError) as refused:
        via_anthropic.messages.create(**MESSAGE)
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    via.chat.completions.create(**CHAT)  # another identity of the tenant: its own bucket

    expected = sent + 4  # and the four requests made directly above
    records = raw_records(kafka_topics, expected=expected, timeout=10)
    assert len(records) == expected
    decisions = [r["event"] for r in records if r["kind"] == "event"]
    assert {e["event_type"] for e in decisions} == {"protection_decision"}
    assert {e["payload"]["reason"] for e in decisions} == {"frozen", "rate_limited"}
    assert all(e["tenant_id"] == "acme" for e in decisions)
    frozen = next(e for e in decisions if e["payload"]["reason"] == "frozen")
    assert frozen["payload"]["scope"] == "tenant:acme" and frozen["actor"]["type"] in ("agent", "human")
    limited = next(e for e in decisions if e["payload"]["reason"] == "rate_limited")
    assert limited["payload"]["key_id"] == keys["root"].key_id and limited["payload"]["retry_after_s"] >= 1


def test_bad_input_gets_the_providers_error_shape_and_is_recorded(gateway, keys, kafka_topics):
    auth = {"Authorization": f"Bearer {keys['child_key']}"}
    status, _, body = http(gateway, "POST", "/v1/chat/completions", b'{"model": "gpt-4o", ', auth)
    assert status == 400 and orjson.loads(body)["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in orjson.loads(body)["error"]["message"]
    status, _, body = http(gateway, "POST", "/v1/messages", b"[1, 2]", {"x-api-key": keys["child_key"]})
    assert status == 400 and orjson.loads(body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "request body must be a JSON object"},
    }
    status, _, body = http(gateway, "POST", "/v1/embeddings", b"x" * (MAX_BODY_BYTES + 1), auth)
    assert status == 413 and orjson.loads(body)["error"]["code"] == "request_too_large"
    status, _, body = http(gateway, "POST", "/v1/nope", b"{}", auth)
    assert status == 404 and "error" in orjson.loads(body)
    assert http(gateway, "GET", "/v1/chat/completions", None, auth)[0] == 405
    assert http(gateway, "GET", "/healthz")[2] == b'{"status": "ok"}'
    assert http(gateway, "GET", "/readyz")[0] == 200
    records = raw_records(kafka_topics, expected=3)
    assert sorted((r["status"], r["error_type"]) for r in records) == [
        (400, "invalid_request_error"),
        (400, "invalid_request_error"),
        (413, "invalid_request_error"),
    ]
    assert all(r["usage"] is None and r["key_id"] == keys["child"].key_id for r in records)


def test_correlation_ids_and_body_capture_with_redaction(gateway, mock_upstream, keys, control, kafka_topics):
    auth = {"Authorization": f"Bearer {keys['child_key']}"}
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    _, given, _ = http(
        gateway,
        "POST",
        "/v1/messages",
        orjson.dumps(MESSAGE),
        {
            "x-api-key": keys["child_key"],
            "x-request-id": "req-from-client",
            "traceparent": traceparent,
            "x-tokentrail-session": "session-9",
        },
    )
    assert given["x-request-id"] == "req-from-client"
    _, minted, _ = http(gateway, "POST", "/v1/chat/completions", orjson.dumps(CHAT), auth)
    assert minted["x-tokentrail-request-id"]
    control.put_control(Capture(scope="tenant:acme", enabled=True, changed_at=_now()))
    secret_prompt = orjson.dumps(
        {
            **CHAT,
            "messages": [
                {
                    "role": "user",
                    "content": "mail jane@example.com, card 4111 1111 1111 1111, key sk-proj-abcdefghijklmnopqrstu",
                }
            ],
        }
    )
    _eventually(
        lambda: any(r["request_body"] for r in raw_records(kafka_topics, expected=99, timeout=0.2)),
        action=lambda: http(gateway, "POST", "/v1/chat/completions", secret_prompt, auth),
    )
    records = raw_records(kafka_topics, expected=3)
    first = next(r for r in records if r["request_id"] == "req-from-client")
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and first["session_id"] == "session-9"
    assert first["request_body"] is None and first["response_body"] is None  # capture off by default
    second = next(r for r in records if r["request_id"] == minted["x-tokentrail-request-id"])
    assert len(second["trace_id"]) == 32
    captured = next(r for r in records if r["request_body"] is not None)
    assert "jane@example.com" not in captured["request_body"] and "4111" not in captured["request_body"]
    assert "sk-proj" not in captured["request_body"] and "[REDACTED:email]" in captured["request_body"]
    assert "lorem ipsum" in captured["response_body"]


@pytest.mark.parametrize(
    ("path", "body", "final_usage"),
    [
        (
            "/v1/chat/completions",
            {**CHAT, "stream": True, "max_tokens": 64},
            {"prompt_tokens": 900, "completion_tokens": 40},
        ),
        ("/v1/messages", {**MESSAGE, "stream": True, "max_tokens": 64}, {"input_tokens": 900, "output_tokens": 40}),
    ],
)
def test_client_disconnect_mid_stream_is_priced_from_the_providers_final_usage(
    gateway, keys, kafka_topics, path, body, final_usage
):
    """The client leaves after the first chunk; the gateway reads the provider's answer to its
    end, so the record has the usage the provider bills (OpenAI's final usage chunk,
    Anthropic's last message_delta), not none or message_start's."""
    payload = orjson.dumps(body)
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"anthropic-version: 2023-06-01\r\nx-mock-chunk-delay-ms: 20\r\n"
            b"x-mock-usage: input=900,output=40\r\nAuthorization: Bearer "
            + keys["child_key"].encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(payload)
            + payload
        )
        assert connection.recv(65536).startswith(b"HTTP/1.1 200")
    [record] = raw_records(kafka_topics, expected=1, timeout=20)
    assert record["client_disconnected"] is True and record["stream"] is True and record["status"] == 200
    assert {name: record["usage"].get(name) for name in final_usage} == final_usage


def http(gateway, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers with lower-case names, body) of one plain HTTP request."""
    import http.client

    host, port = gateway.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _now():
    from datetime import datetime

    return datetime.now(UTC)


def _status(call) -> int:
    try:
        call()
        return 200
    except (openai.APIStatusError, anthropic.APIStatusError) as exc:
        return exc.status_code


def _eventually(condition, timeout: float = 2.0, action=None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if action is not None:
            action()
        if condition():
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)
