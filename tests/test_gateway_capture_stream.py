"""Capture of a streamed answer (issue 12): a provider that splits an email across `data:`
events, and reports a model name holding one, through a real gateway with capture on for the
tenant; the RawCall on the real topic holds the assembled answer, redacted, and the redacted
model name. A scripted SSE server stands in for the provider (the mock's text is fixed)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import orjson
import pytest

from schemas.models import Actor, Capture
from tests.fixtures.gateway import gateway_env, raw_records, spawn_gateway, wait_for_key

pytestmark = pytest.mark.kafka
PIECES = ["Write to jane.d", "oe@exam", "ple.com, or call +1 415-", "555-0132."]
SERVED_MODEL = "gpt-4o for bob@example.com"


class SplitStream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        events = [
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": SERVED_MODEL,
                "choices": [{"delta": {"content": p}}],
            }
            for p in PIECES
        ]
        events.append(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": SERVED_MODEL,
                "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
            }
        )
        body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - wait_for_key's probe
        body = b'{"object":"list","data":[]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def split_gateway(kafka_topics, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), SplitStream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    process = spawn_gateway(gateway_env(kafka_topics, f"http://127.0.0.1:{server.server_address[1]}"), tmp_path)
    yield process
    process.stop()
    server.shutdown()
    server.server_close()


def test_a_streamed_answer_with_an_email_split_across_events_is_stored_redacted(split_gateway, control, kafka_topics):
    _, key = control.create_key("acme", Actor(type="human", id="alice"))
    control.put_control(Capture(scope="tenant:acme", enabled=True, changed_at=datetime.now(UTC)))
    wait_for_key(split_gateway, key)
    client = openai.OpenAI(base_url=split_gateway.url + "/v1", api_key=key, max_retries=0)
    deadline = time.monotonic() + 10
    while True:  # until the Capture record has reached the gateway
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as response:
            relayed = b"".join(response.iter_bytes())
        assert b"oe@exam" in relayed  # the client gets the provider's bytes unchanged
        records = [r for r in raw_records(kafka_topics, expected=99, timeout=0.5) if r["kind"] == "call"]
        if any(r["response_body"] for r in records):
            break
        assert time.monotonic() < deadline, "capture never turned on"
    record = next(r for r in records if r["response_body"])
    assert record["response_body"] == "Write to [REDACTED:email], or call [REDACTED:phone]."
    assert record["served_model"] == "gpt-4o for [REDACTED:email]"
    assert record["usage"]["total_tokens"] == 12
