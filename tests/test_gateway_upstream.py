"""What the gateway sends upstream, and what happens when the upstream fails, seen from a
recording HTTP server standing in for the provider (the mock cannot show request headers)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import orjson
import pytest

from schemas.models import Actor
from tests.fixtures.gateway import gateway_env, raw_records, spawn_gateway, wait_for_key
from tokentrail.broker.server import free_port

pytestmark = pytest.mark.kafka
ANSWER = orjson.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
)


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if "x-delay-s" in self.headers:
            time.sleep(float(self.headers["x-delay-s"]))
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER)
        except BrokenPipeError:
            pass  # the gateway gave up on a slow answer (the 504 case)

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.do_POST()


@pytest.fixture
def recorder():
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def odd_gateway(kafka_topics, recorder, tmp_path):
    """OpenAI upstream = the recorder (timeout 0.5 s), Anthropic upstream = a closed port."""
    url = f"http://127.0.0.1:{recorder.server_address[1]}"
    env = {
        **gateway_env(kafka_topics, url),
        "TOKENTRAIL_UPSTREAM_TIMEOUT_S": "0.5",
        "TOKENTRAIL_FORWARD_HEADERS": "x-delay-s",  # the recorder's delay control
        "TOKENTRAIL_UPSTREAM_ANTHROPIC_URL": f"http://127.0.0.1:{free_port()}",
    }
    process = spawn_gateway(env, tmp_path / "home")
    yield process
    process.stop()


def test_upstream_gets_the_route_path_the_provider_credential_and_allowed_headers_only(
    odd_gateway, control, kafka_topics
):
    _, key = control.create_key("acme", Actor(type="human", id="alice"))
    wait_for_key(odd_gateway, key)
    Recorder.seen.clear()
    host, port = odd_gateway.url.removeprefix("http://").split(":")
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST http://evil.example/v1/chat/completions?beta=true HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/json\r\nX-Stainless-Lang: python\r\nCookie: s=1\r\nOpenAI-Project: proj_x\r\n"
            b"Connection: keep-alive, x-secret-hop\r\nx-secret-hop: 1\r\nKeep-Alive: timeout=5\r\n"
            b"Proxy-Authorization: Basic abc\r\nTE: trailers\r\nUpgrade: h2c\r\nAccept-Encoding: br, gzip\r\n"
            b"x-tokentrail-session: s1\r\nOpenAI-Organization: org-1\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        reply = connection.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(ANSWER)
    [(path, headers, forwarded)] = Recorder.seen
    assert path == "/v1/chat/completions?beta=true" and forwarded == body  # never the absolute form
    assert headers["authorization"] == "Bearer sk-gateway-openai-credential"
    assert key not in str(headers)
    for hop in (
        "connection",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
        "x-secret-hop",
        "x-tokentrail-session",
        "x-api-key",
        "cookie",
        "openai-organization",  # who pays is the operator's choice (docs/gateway.md)
        "openai-project",
        "host",
    ):
        assert hop not in headers or (hop == "host" and headers[hop] != "gateway"), hop
    assert headers["accept-encoding"] == "gzip" and headers["x-stainless-lang"] == "python"
    assert headers["x-request-id"] and headers["traceparent"].startswith("00-")

    # A refused request never reaches the upstream.
    client = openai.OpenAI(base_url=odd_gateway.url + "/v1", api_key="tt_0123456789abcdef_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert len(Recorder.seen) == 1


def test_unreachable_upstream_is_502_and_a_slow_one_504_both_recorded(odd_gateway, control, kafka_topics):
    _, key = control.create_key("acme", Actor(type="agent", id="bot"))
    wait_for_key(odd_gateway, key)
    import anthropic

    claude = anthropic.Anthropic(base_url=odd_gateway.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 502 and refused.value.body["error"]["type"] == "api_error"
    gpt = openai.OpenAI(base_url=odd_gateway.url + "/v1", api_key=key, max_retries=0)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as slow:
        gpt.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-delay-s": "2"}
        )
    assert slow.value.status_code == 504 and time.monotonic() - started < 1.5
    assert (
        gpt.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).usage.total_tokens
        == 3
    )

    records = raw_records(kafka_topics, expected=3)
    by_status = {record["status"]: record for record in records}
    assert set(by_status) == {200, 502, 504}
    assert by_status[502]["provider"] == "anthropic" and by_status[502]["error_code"] is None
    assert by_status[502]["error_type"] == "api_error" and by_status[502]["first_byte_at"] is None
    assert by_status[504]["error_code"] == "upstream_timeout" and by_status[504]["latency_ms"] >= 500
    metrics = odd_gateway.metrics()
    assert metrics['tokentrail_gateway_upstream_errors_total{kind="unreachable",provider="anthropic"}'] == 1
    assert metrics['tokentrail_gateway_upstream_errors_total{kind="timeout",provider="openai"}'] == 1
    assert metrics['tokentrail_gateway_requests_total{endpoint="/v1/chat/completions",status="504"}'] == 1
