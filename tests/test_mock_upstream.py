"""The mock provider, through the official SDKs and raw sockets (tests/fixtures/mock_upstream.py).

The SDKs' own response types are the contract: if a shape drifts from what `openai` or
`anthropic` parse, these tests fail. SDK retries are off, so every error is seen once.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from array import array

import anthropic
import httptools
import openai
import orjson
import pytest

from mock_upstream import replies
from mock_upstream.process import spawn_mock_upstream
from mock_upstream.server import start_mock_in_thread

CHAT = [{"role": "user", "content": "Say hello"}]
ANTHROPIC_MODEL = "claude-haiku-4-5"


@pytest.fixture(scope="module")
def oai(mock_upstream) -> openai.OpenAI:
    client = openai.OpenAI(base_url=mock_upstream.url + "/v1", api_key="sk-test", max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def claude(mock_upstream) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=mock_upstream.url, api_key="sk-ant-test", max_retries=0)
    yield client
    client.close()


# --- raw HTTP helpers ---------------------------------------------------------------------------


class _Responses:
    """Collects (status, headers, body) of every response httptools parses from a byte stream."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self.headers, b"".join(self.body)))
        self.headers, self.body = {}, []


def exchange(url: str, data: bytes, expect: int, probe_close: bool = False, timeout: float = 10.0) -> tuple[list, bool]:
    """Send raw bytes on one connection; return the first `expect` responses and whether the
    server closed the connection (after them; `probe_close` waits 0.3 s to see it)."""
    with connect(url, timeout) as sock:
        sock.sendall(data)
        parsed, closed = read_responses(sock, expect)
        if probe_close and not closed:
            sock.settimeout(0.3)
            try:
                closed = sock.recv(1) == b""
            except TimeoutError:
                pass
    return parsed.done, closed


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_responses(sock: socket.socket, expect: int, parsed: _Responses | None = None) -> tuple[_Responses, bool]:
    parsed = parsed or _Responses()
    while len(parsed.done) < expect:
        chunk = sock.recv(65536)
        if not chunk:
            return parsed, True
        parsed.parser.feed_data(chunk)
    return parsed, False


def http_request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, connection: str | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: mock"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if connection:
        lines.append(f"Connection: {connection}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chat_body(content: str = "Say hello", **extra) -> bytes:
    return orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra})


# --- OpenAI through the SDK ---------------------------------------------------------------------


def test_chat_completion_has_typed_usage_and_echoes_the_model(oai):
    response = oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=5)
    assert response.model == "gpt-4o-mini"
    assert response.choices[0].message.content == "lorem ipsum dolor sit amet"
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage.completion_tokens == 5
    assert usage.prompt_tokens == replies.estimate_tokens(CHAT)
    assert usage.total_tokens == usage.prompt_tokens + 5
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_completion_honours_x_mock_usage_and_served_model(oai):
    response = oai.chat.completions.create(
        model="gpt-4o",
        messages=CHAT,
        extra_headers={
            "x-mock-usage": "input=1200,output=300,cached=200,reasoning=50",
            "x-mock-served-model": "gpt-4o-2024-08-06",
        },
    )
    assert response.model == "gpt-4o-2024-08-06"
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1200, 300, 1500)
    assert usage.prompt_tokens_details.cached_tokens == 200
    assert usage.completion_tokens_details.reasoning_tokens == 50
    assert len(response.choices[0].message.content.split()) == 300


def test_streamed_chat_ends_with_a_usage_chunk_when_asked(oai):
    whole = oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT).choices[0].message.content
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=CHAT,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-mock-usage": "cached=7"},
        )
    )
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) == replies.STREAM_DELTAS
    assert "".join(deltas) == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    final = chunks[-1]
    assert final.choices == []
    assert final.usage.completion_tokens == replies.DEFAULT_OUTPUT_TOKENS
    assert final.usage.prompt_tokens_details.cached_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])


def test_streamed_chat_without_include_usage_has_no_usage_chunk(oai):
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_legacy_completion_plain_and_streamed(oai):
    plain = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once", max_tokens=3)
    assert plain.choices[0].text == "lorem ipsum dolor"
    assert plain.usage.completion_tokens == 3
    chunks = list(
        oai.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Once",
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "lorem ipsum dolor"
    assert chunks[-1].usage.completion_tokens == 3


def test_embeddings_are_deterministic_in_both_encodings(oai):
    floats = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], dimensions=8)
    assert [d.index for d in floats.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in floats.data)
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == replies.estimate_tokens(["alpha", "beta"])
    raw = oai.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="alpha", dimensions=8, encoding_format="base64"
    )
    encoded = orjson.loads(raw.content)["data"][0]["embedding"]
    assert list(array("f", base64.b64decode(encoded))) == pytest.approx(floats.data[0].embedding)
    default = oai.embeddings.create(model="text-embedding-3-small", input="alpha")
    assert len(default.data[0].embedding) == replies.DEFAULT_EMBEDDING_DIMENSIONS


def test_responses_api_plain_and_streamed(oai):
    response = oai.responses.create(
        model="gpt-4.1",
        input="hello",
        max_output_tokens=6,
        extra_headers={"x-mock-usage": "cached=3,cache_write=2,reasoning=1"},
    )
    assert response.output_text == "lorem ipsum dolor sit amet consectetur"
    assert response.usage.output_tokens == 6
    assert response.usage.input_tokens_details.cached_tokens == 3
    assert response.usage.input_tokens_details.cache_write_tokens == 2
    assert response.usage.output_tokens_details.reasoning_tokens == 1

    with oai.responses.stream(model="gpt-4.1", input="hello", max_output_tokens=6) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 6
    assert final.output_text == response.output_text
    assert final.usage.output_tokens == 6


def test_models_list_in_each_providers_shape(oai, claude):
    assert {"gpt-4o", "text-embedding-3-small"} <= {m.id for m in oai.models.list()}
    assert ANTHROPIC_MODEL in {m.id for m in claude.models.list()}


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_request_error"),
        (429, openai.RateLimitError, "requests"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
def test_forced_statuses_raise_the_openai_sdks_typed_errors(oai, status, error_class, error_type):
    with pytest.raises(error_class) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=CHAT, extra_headers={"x-mock-status": str(status)})
    assert caught.value.status_code == status
    assert caught.value.body["type"] == error_type
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert ("retry-after" in caught.value.response.headers) == (status == 429)


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (401, anthropic.AuthenticationError, "authentication_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_forced_statuses_raise_the_anthropic_sdks_typed_errors(claude, status, error_class, error_type):
    with pytest.raises(error_class) as caught:
        claude.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=10, messages=CHAT, extra_headers={"x-mock-status": str(status)}
        )
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == error_type
    assert isinstance(caught.value, anthropic.InternalServerError) == (status >= 500)


def test_error_type_header_overrides_the_type(oai, claude):
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(
            model="gpt-4o",
            messages=CHAT,
            extra_headers={"x-mock-status": "429", "x-mock-error-type": "insufficient_quota"},
        )
    assert caught.value.body["type"] == "insufficient_quota"
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(
            model=ANTHROPIC_MODEL,
            max_tokens=10,
            messages=CHAT,
            extra_headers={"x-mock-status": "500", "x-mock-error-type": "overloaded_error"},
        )
    assert caught.value.body["error"]["type"] == "overloaded_error"


# --- Anthropic through the SDK ------------------------------------------------------------------


def test_anthropic_message_has_typed_usage(claude):
    message = claude.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=4,
        system="be brief",
        messages=CHAT,
        extra_headers={"x-mock-usage": "input=1000,cached=200,cache_write=100"},
    )
    assert message.model == ANTHROPIC_MODEL
    assert message.content[0].text == "lorem ipsum dolor sit"
    assert message.stop_reason == "end_turn"
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (1000, 4)
    assert usage.cache_read_input_tokens == 200
    assert usage.cache_creation_input_tokens == 100


def test_anthropic_stream_final_message_carries_usage(claude):
    with claude.messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=12, messages=CHAT, extra_headers={"x-mock-usage": "cached=5"}
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("text") == replies.STREAM_DELTAS
    assert "message_delta" in kinds
    assert final.content[0].text == " ".join(replies.LOREM[:12])
    assert final.usage.output_tokens == 12
    assert final.usage.input_tokens == replies.estimate_tokens([None, CHAT])
    assert final.usage.cache_read_input_tokens == 5
    assert final.stop_reason == "end_turn"


def test_anthropic_requires_max_tokens(mock_upstream):
    body = orjson.dumps({"model": ANTHROPIC_MODEL, "messages": CHAT})
    [(status, _, payload)], _ = exchange(mock_upstream.url, http_request("POST", "/v1/messages", body), 1)
    assert status == 400
    assert orjson.loads(payload)["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}


# --- bad input, in each provider's shape --------------------------------------------------------


def test_bad_json_is_a_400_in_each_providers_shape(mock_upstream):
    data = http_request("POST", "/v1/chat/completions", b"{not json") + http_request("POST", "/v1/messages", b"[1,")
    (openai_reply, anthropic_reply), closed = exchange(mock_upstream.url, data, 2, probe_close=True)
    assert not closed
    assert openai_reply[0] == anthropic_reply[0] == 400
    error = orjson.loads(openai_reply[2])["error"]
    assert error["type"] == "invalid_request_error" and "JSON" in error["message"]
    body = orjson.loads(anthropic_reply[2])
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_unknown_route_is_404_and_wrong_method_405(mock_upstream):
    data = (
        http_request("POST", "/v1/nope", b"{}")
        + http_request("GET", "/v2/x", headers={"anthropic-version": "2023-06-01"})
        + http_request("GET", "/v1/chat/completions")
    )
    replies_, _ = exchange(mock_upstream.url, data, 3)
    assert [r[0] for r in replies_] == [404, 404, 405]
    assert orjson.loads(replies_[0][2])["error"]["message"] == "Invalid URL (POST /v1/nope)"
    assert orjson.loads(replies_[1][2])["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"x-mock-usage": "input=lots"}, "x-mock-usage"),
        ({"x-mock-usage": "tokens=3"}, "x-mock-usage"),
        ({"x-mock-status": "302"}, "x-mock-status"),
        ({"x-mock-latency-ms": "-5"}, "x-mock-latency-ms"),
    ],
)
def test_bad_control_headers_are_a_400_naming_the_header(mock_upstream, headers, named):
    [(status, _, payload)], _ = exchange(
        mock_upstream.url, http_request("POST", "/v1/chat/completions", chat_body(), headers), 1
    )
    assert status == 400
    assert named in orjson.loads(payload)["error"]["message"]


def test_oversize_headers_and_garbage_get_an_error_and_a_close(mock_upstream):
    [(status, _, payload)], closed = exchange(
        mock_upstream.url, http_request("GET", "/healthz", headers={"x-big": "a" * 70_000}), 1, True
    )
    assert status == 431 and closed
    assert "headers larger than" in orjson.loads(payload)["error"]["message"]
    [(status, _, _)], closed = exchange(mock_upstream.url, b"NOT HTTP AT ALL\r\n\r\n", 1, True)
    assert status == 400 and closed


# --- the HTTP layer -----------------------------------------------------------------------------


def test_same_request_same_bytes(mock_upstream):
    request = http_request("POST", "/v1/chat/completions", chat_body(stream=True))
    first, _ = exchange(mock_upstream.url, request, 1)
    second, _ = exchange(mock_upstream.url, request, 1)
    other, _ = exchange(
        mock_upstream.url, http_request("POST", "/v1/chat/completions", chat_body("other", stream=True)), 1
    )
    assert first == second
    assert first[0][2].count(b"data: ") == replies.STREAM_DELTAS + 3
    assert other[0][2] != first[0][2]


def test_pipelined_requests_are_answered_in_order(mock_upstream):
    bodies = [chat_body(f"question {i}") for i in range(4)]
    data = b"".join(
        http_request(
            "POST",
            "/v1/chat/completions",
            body,
            {"x-mock-latency-ms": "150"} if i == 0 else {"x-mock-chunk-delay-ms": "5"} if i == 2 else {},
        )
        for i, body in enumerate(bodies)
    )
    answered, closed = exchange(mock_upstream.url, data, 4, probe_close=True)
    expected_ids = [
        orjson.loads(exchange(mock_upstream.url, http_request("POST", "/v1/chat/completions", b), 1)[0][0][2])["id"]
        for b in bodies
    ]
    assert [orjson.loads(body)["id"] for _, _, body in answered] == expected_ids
    assert not closed


def test_chunked_request_body_and_connection_close(mock_upstream):
    body = chat_body()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    framed = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    [(status, headers, payload)], closed = exchange(mock_upstream.url, head + framed, 1, probe_close=True)
    assert status == 200 and closed
    assert headers["connection"] == "close"
    assert orjson.loads(payload)["usage"]["prompt_tokens"] == replies.estimate_tokens(orjson.loads(body)["messages"])


def test_expect_100_continue_is_answered_before_the_body(mock_upstream):
    request = http_request("POST", "/v1/chat/completions", chat_body(), {"Expect": "100-continue"})
    head, body = request.split(b"\r\n\r\n", 1)
    with connect(mock_upstream.url) as sock:
        sock.sendall(head + b"\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        parsed, _ = read_responses(sock, 1)
    assert parsed.done[0][0] == 200


def test_latency_delays_one_connection_without_blocking_others(mock_upstream):
    slow = http_request("POST", "/v1/chat/completions", chat_body(), {"x-mock-latency-ms": "400"})
    with connect(mock_upstream.url) as first, connect(mock_upstream.url) as second:
        started = time.monotonic()
        first.sendall(http_request("GET", "/healthz") + slow)
        parsed, _ = read_responses(first, 1)  # the server has read the slow request too
        fast_started = time.monotonic()
        second.sendall(http_request("GET", "/healthz"))
        read_responses(second, 1)
        fast = time.monotonic() - fast_started
        read_responses(first, 2, parsed)
        slow_elapsed = time.monotonic() - started
    assert [status for status, _, _ in parsed.done] == [200, 200]
    assert fast < 0.2 < 0.4 <= slow_elapsed


def test_chunk_delay_spreads_the_stream_over_time(mock_upstream):
    request = http_request(
        "POST",
        "/v1/messages",
        orjson.dumps({"model": ANTHROPIC_MODEL, "max_tokens": 8, "messages": CHAT, "stream": True}),
        {"x-mock-chunk-delay-ms": "30"},
    )
    arrivals = []
    with connect(mock_upstream.url) as sock:
        sock.sendall(request)
        received = b""
        while not received.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk
            received += chunk
            arrivals.append(time.monotonic())
    assert received.count(b"event: content_block_delta") == 8
    assert len(arrivals) >= 5
    assert arrivals[-1] - arrivals[0] >= 0.2


# --- processes, threads and the CLI -------------------------------------------------------------


def test_busy_port_is_a_one_line_error_naming_the_port(mock_upstream):
    port = mock_upstream.url.rsplit(":", 1)[1]
    run = subprocess.run(
        [sys.executable, "-m", "mock_upstream", "--port", port], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2
    assert (
        run.stderr.strip()
        == f"tokentrail mock-upstream: port {port} on 127.0.0.1 is already in use; pick another with --port"
    )


def test_bad_port_flag_is_refused():
    run = subprocess.run(
        [sys.executable, "-m", "mock_upstream", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "not a TCP port: '70000'" in run.stderr


def test_workers_share_the_port_and_stop_together():
    mock = spawn_mock_upstream(workers=2)
    try:
        children = [int(pid) for pid in open(f"/proc/{mock.pid}/task/{mock.pid}/children").read().split()]
        assert len(children) == 2
        answers, _ = exchange(mock.url, http_request("GET", "/healthz") * 3, 3)
        assert [a[0] for a in answers] == [200] * 3
    finally:
        mock.stop()
    assert mock.process.returncode == 0
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)


def test_thread_helper_serves_and_stops():
    host, port, stop = running = start_mock_in_thread()
    try:
        [(status, _, body)], _ = exchange(running.url, http_request("GET", "/healthz"), 1)
        assert (status, body) == (200, b'{"status":"ok"}')
    finally:
        stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=1).close()


def test_sigterm_stops_a_single_worker_cleanly():
    mock = spawn_mock_upstream()
    mock.process.send_signal(signal.SIGTERM)
    assert mock.process.wait(timeout=5) == 0
    mock.stop()


# --- reply logic, without a server --------------------------------------------------------------


def test_split_deltas_rejoins_to_the_text():
    for count in (0, 1, 3, 8, 17, 300):
        words = (replies.LOREM * 20)[:count]
        pieces = replies.split_deltas(words)
        assert "".join(pieces) == " ".join(words)
        assert len(pieces) == min(count, replies.STREAM_DELTAS)


def test_parse_usage_accepts_any_subset_and_rejects_unknown_fields():
    assert replies.parse_usage("input=1200, output=300,cached=200,cache_write=100,reasoning=50") == {
        "input": 1200,
        "output": 300,
        "cached": 200,
        "cache_write": 100,
        "reasoning": 50,
    }
    assert replies.parse_usage("") == {}
    with pytest.raises(replies.RequestError, match="unknown field 'prompt'"):
        replies.parse_usage("prompt=3")


def test_output_tokens_are_capped():
    body = orjson.dumps({"model": "m", "messages": CHAT, "max_tokens": 10**6})
    reply = replies.reply("POST", "/v1/chat/completions", {}, body)
    assert orjson.loads(reply.body)["usage"]["completion_tokens"] == replies.MAX_OUTPUT_TOKENS
