"""Unit tests of the gateway's input bounds, header allow-list, resource bounds, capture and
redaction (no broker, no process): the pure parts docs/gateway.md describes under "Bounds"."""

from __future__ import annotations

import random
import time

import orjson
import pytest

from gateway import bounds, redaction
from gateway.capture import REDACTION_MARGIN, StreamCapture, captured_text, stream_pieces
from gateway.headers import AllowList, forwarded_path, upstream_headers
from gateway.pressure import OVERFLOW_SOURCE, FailedAuthentication, InFlight
from gateway.redaction import compiled_emails_and_numbers, redact, regex_emails_and_numbers
from schemas.models import RawCall


def test_client_ids_are_refused_past_the_records_bound_or_when_not_plain_text():
    assert bounds.MAX_ID_CHARS == RawCall.model_json_schema()["properties"]["request_id"]["maxLength"]
    assert bounds.request_id(None) == (None, None) and bounds.request_id("") == (None, None)
    assert bounds.request_id("req-1") == ("req-1", None)
    assert bounds.request_id("r" * 256) == ("r" * 256, None)
    for bad in ("r" * 257, "a b", "caf\u00e9", "\udcff\udcfe", "a\tb"):
        value, problem = bounds.request_id(bad)
        assert value is None and "x-request-id" in problem, bad
    assert bounds.session_id("séance 9") == ("séance 9", None)
    for bad in ("", "s" * 257, "a\nb", "\udcff"):
        assert bounds.session_id(bad)[1] is not None, bad
    assert bounds.body_string("model", "gpt-4o") == ("gpt-4o", None)
    assert bounds.body_string("model", 42) == (None, None)  # not recorded; the provider answers it
    value, problem = bounds.body_string("user", "u" * 1_200_000)
    assert value is None and "'user' is 1200000 characters long" in problem


def test_only_a_valid_traceparent_is_kept():
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert bounds.trace_id(good) == "0af7651916cd43dd8448eb211c80319c"
    for bad in (
        None,
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-\udcff" * 20,
        good + "x" * 500,
    ):
        assert bounds.trace_id(bad) is None, bad


def test_a_presented_key_becomes_hashable_text_and_provider_strings_are_cut_and_redacted():
    raw = "tt_\udcff\udcfe".encode("utf-8", "surrogateescape")
    assert bounds.presented_key("tt_\udcff\udcfe") == raw.decode("latin-1")
    assert len(bounds.presented_key("k" * 10_000)) == bounds.MAX_KEY_CHARS + 1
    assert bounds.from_provider("gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"
    assert bounds.from_provider("model of jane@example.com") == "model of [REDACTED:email]"
    assert len(bounds.from_provider("m" * 100_000)) == bounds.MAX_ID_CHARS
    orjson.dumps(bounds.from_provider("bad\udcffvalue"))  # JSON-safe


def test_only_the_route_path_and_allowed_headers_go_upstream():
    assert forwarded_path("/v1/messages", "beta=true") == b"/v1/messages?beta=true"
    assert forwarded_path("/v1/chat/completions", "") == b"/v1/chat/completions"
    assert forwarded_path("/v1/chat/completions", "a=b c") == b"/v1/chat/completions"
    raw = (
        (b"Host", b"evil.example"),
        (b"Authorization", b"Bearer tt_0123456789abcdef_secret"),
        (b"OpenAI-Organization", b"org-someone-else"),
        (b"OpenAI-Project", b"proj_other"),
        (b"Cookie", b"session=1"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"Content-Type", b"application/json"),
        (b"X-Stainless-Lang", b"python"),
        (b"anthropic-version", b"2023-06-01"),
        (b"Accept-Encoding", b"br, gzip"),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        (b"tracestate", b"k=" + b"v" * 600),
        (b"x-mock-status", b"500"),
    )
    sent = b"".join(upstream_headers(raw, AllowList(), traceparent_valid=True))
    assert sent == (
        b"Content-Type: application/json\r\nX-Stainless-Lang: python\r\nanthropic-version: 2023-06-01\r\n"
        b"Accept-Encoding: gzip\r\n"
        b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
    )
    with_mock = b"".join(upstream_headers(raw, AllowList("x-mock-*, x-extra"), traceparent_valid=False))
    assert b"x-mock-status: 500\r\n" in with_mock and b"traceparent" not in with_mock


def test_in_flight_requests_and_body_bytes_are_capped():
    in_flight = InFlight(max_requests=2, max_body_bytes=100)
    assert in_flight.enter(60) and not in_flight.enter(60)  # over the byte budget
    assert in_flight.enter(40) and not in_flight.enter(0)  # over the request cap
    in_flight.leave(60)
    in_flight.leave(40)
    assert (in_flight.requests, in_flight.body_bytes) == (0, 0)
    assert in_flight.enter(500)  # alone, a body up to the body limit always fits


def test_failed_authentication_is_one_event_per_source_per_interval_and_the_table_is_bounded():
    failures = FailedAuthentication(interval_s=60, max_sources=3)
    assert failures.failed("10.0.0.1", 0.0) == ("10.0.0.1", 1)
    assert [failures.failed("10.0.0.1", t) for t in (1.0, 2.0, 59.0)] == [None, None, None]
    assert failures.failed("10.0.0.1", 60.0) == ("10.0.0.1", 4)  # this one and the 3 counted
    assert failures.failed("10.0.0.2", 60.0) == ("10.0.0.2", 1)
    assert failures.failed("10.0.0.3", 60.0) == ("10.0.0.3", 1)
    assert failures.failed("10.0.0.4", 61.0) == (OVERFLOW_SOURCE, 1)  # table full, none expired
    assert failures.failed("10.0.0.5", 62.0) is None  # counted under the overflow source
    assert len(failures) == 4
    assert failures.failed("10.0.0.6", 200.0) == ("10.0.0.6", 1)  # expired sources made room
    for source in range(100_000):
        failures.failed(f"spray-{source}", 300.0)
    assert len(failures) <= 4


def test_capture_is_redacted_before_it_is_cut_and_bounded_in_the_record():
    limit = 1024
    body = b"x" * (limit - 10) + b" jane.doe@example.com and more"
    text = captured_text(body, limit)
    assert "jane" not in text and "example.com" not in text and text.endswith(f"[TRUNCATED: {len(body)} bytes]")
    control_chars = bytes(range(1, 32)) * 200
    assert len(orjson.dumps(captured_text(control_chars, limit))) <= limit
    huge = b"a" * (10 * 1024 * 1024)
    assert len(orjson.dumps(captured_text(huge, limit))) <= limit
    assert captured_text(b"short and clean", limit) == "short and clean"
    pem = b"-----BEGIN PRIVATE KEY-----\n" + b"A" * (limit + REDACTION_MARGIN)
    assert "AAAA" not in captured_text(pem, limit)


def _sse(events: list[dict]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events) + b"data: [DONE]\n\n"


def test_a_streamed_answer_is_captured_as_its_assembled_text_redacted():
    chat = _sse(
        [
            {"choices": [{"delta": {"content": "write to jane.d"}}]},
            {"choices": [{"delta": {"content": "oe@exam"}}]},
            {"choices": [{"delta": {"content": "ple.com today"}}]},
            {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": '{"a":1}'}}]}}]},
        ]
    )
    capture = StreamCapture(4096)
    for cut in range(0, len(chat), 7):  # chunks that split events too
        capture.add(chat[cut : cut + 7])
    assert capture.text("openai", 4096) == 'write to [REDACTED:email] today{"a":1}'
    anthropic = _sse(
        [
            {"type": "message_start", "message": {"model": "claude"}},
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "SSN 123-45-"}},
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "6789."}},
        ]
    )
    assert "".join(stream_pieces("anthropic", anthropic)) == "SSN 123-45-6789."
    responses = _sse([{"type": "response.output_text.delta", "delta": "hi"}, {"type": "response.completed"}])
    assert "".join(stream_pieces("openai", responses)) == "hi"
    long = StreamCapture(10)
    long.add(_sse([{"choices": [{"delta": {"content": "y" * 50}}]}] * 20))
    assert long.text("openai", 100).endswith("bytes]")


def test_redaction_masks_the_new_kinds():
    text = (
        "ssn 123-45-6789 (not 000-12-3456 or 123-45-67890); stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc "
        "rk_test_abcdefgh12345678; db postgres://admin:hunter2@db.internal:5432/app and https://example.com/a:b@c; "
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n"
        "-----END EC PRIVATE KEY----- done"
    )
    masked = redact(text)
    for secret in ("123-45-6789 ", "4eC39", "abcdefgh1234", "hunter2", "MHcCAQ"):
        assert secret not in masked, secret
    assert "[REDACTED:ssn]" in masked and "000-12-3456" in masked and "123-45-67890" in masked
    assert masked.count("[REDACTED:api_key]") == 2 and "postgres://[REDACTED:url_credentials]@db.internal" in masked
    assert "[REDACTED:private_key] done" in masked and "https://example.com/a:b@c" in masked


def _email_or_number_like(rng: random.Random) -> str:
    """Text made to hit the edges of the email and number rules: digit groups of every length
    joined by every separator, `+cc` and `(area)`, `@` with labels, digits, hyphens and word
    characters around, non-ASCII bytes in between."""
    if rng.random() < 0.3:
        return "".join(rng.choice("0123456789 -.+()\t\n\x0baZ_é\u00a0,@%") for _ in range(rng.randint(1, 60)))
    pieces = []
    for _ in range(rng.randint(1, 8)):
        if rng.random() < 0.3:
            local = "".join(rng.choice("ab._%+-9") for _ in range(rng.randint(0, 5)))
            labels = [rng.choice(["a", "ex-1", "co", "b2", "uk", "x_y", ""]) for _ in range(rng.randint(0, 4))]
            pieces.append(local + "@" + ".".join(labels) + rng.choice(["", ".", ".c", ".de", "-", "9"]))
        else:
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 7)))
            pieces.append(rng.choice(["", "+", "(", " ", "a", "."]) + digits)
        pieces.append(rng.choice(["", ")", ") ", " ", "-", ".", "\t", "a", "_", "-.", "  ", ", ", "é"]))
    return "".join(pieces)


def test_the_compiled_email_and_number_passes_mask_exactly_what_the_regex_passes_mask():
    """gateway/_redaction.c against the Python reference on 60,000 made-up texts, plus the
    shapes of every kind, valid and not; and the gateway runs the compiled passes (`make
    install` builds them: without them 1 MiB of digit groups takes 90-250 ms, not 15)."""
    assert redaction.mask_emails_and_numbers is compiled_emails_and_numbers
    shapes = (
        "call +1 415-555-0132 or (415) 555-0132 or +44 (20) 7946 0958 or 415.555.0132x; "
        "card 4111 1111 1111 1111 or 4242-4242-4242-4242 or 4111111111111112 or 4111 1111 1111 1111 12/27; "
        "ssn 123-45-6789, 000-12-3456, 900-12-3456, 123-00-4567, 123-45-0000, 123-45-67890; "
        "mail bob.smith+x@example.co.uk, a@b.c, a@b.cd9, x@a.bc.d, é@ü.de, @x.de, a@-.de; 3.14159265358979"
    )
    assert compiled_emails_and_numbers(shapes) == regex_emails_and_numbers(shapes)
    assert compiled_emails_and_numbers(shapes) == (
        "call [REDACTED:phone] or [REDACTED:phone] or [REDACTED:phone] or 415.555.0132x; "
        "card [REDACTED:card] or [REDACTED:card] or 4111111111111112 or 4111 1111 1111 1111 12/27; "
        "ssn [REDACTED:ssn], 000-12-3456, 900-12-3456, 123-00-4567, 123-45-0000, 123-45-67890; "
        "mail [REDACTED:email], a@b.c, a@b.cd9, [REDACTED:email].d, é@ü.de, @x.de, [REDACTED:email]; 3.14159265358979"
    )
    rng = random.Random(20261202)
    for _ in range(60_000):
        text = _email_or_number_like(rng)
        assert compiled_emails_and_numbers(text) == regex_emails_and_numbers(text), repr(text)


ADVERSARIAL = {
    "letters": "a",
    "email near-misses": "a@",
    "dotted domains": "x@a.",
    "digits": "1",
    "spaced digits": "1 ",
    "phone-like groups": "12 34 ",
    "card numbers": "4111 1111 1111 1111 ",
    "ssn-like": "123-45-678 ",
    "key prefixes": "sk-",
    "jwt prefixes": "eyJ",
    "bearer words": "Bearer ",
    "url schemes": "a://",
    "url credentials": "a://b:c",
    "pem headers": "-----BEGIN RSA PRIVATE KEY-----",
}


@pytest.mark.parametrize("unit", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_redaction_is_linear_on_adversarial_input(unit):
    """1 MiB of each input in well under a second of CPU (the quadratic email pattern took 3.6 s
    for 64 KiB; bench/gateway/redaction.py prints the figures beside the old patterns), and
    twice the input takes about twice the time, not four times."""
    size = 1 << 20

    def cpu_seconds(length: int) -> float:
        text = (unit * (length // len(unit) + 1))[:length]
        started = time.process_time()
        redact(text)
        return time.process_time() - started

    once = min(cpu_seconds(size) for _ in range(2))
    assert once < 1.0, f"{once:.3f} s for 1 MiB"
    twice = min(cpu_seconds(2 * size) for _ in range(2))
    assert twice < 3.0 * once + 0.01, f"1 MiB {once:.3f} s, 2 MiB {twice:.3f} s"


def test_past_the_in_flight_cap_the_gateway_answers_503_with_retry_after_in_the_providers_shape():
    import asyncio

    from aiohttp.test_utils import make_mocked_request

    from gateway.metrics import GatewayMetrics
    from gateway.proxy import Gateway
    from gateway.settings import GatewaySettings

    settings = GatewaySettings(max_in_flight=1)
    gateway = Gateway(settings, b"k", None, None, None, GatewayMetrics(), {}, lambda: True)  # type: ignore[arg-type]
    gateway.in_flight.enter(0)  # one request in flight already
    openai_answer = asyncio.run(gateway.handle(make_mocked_request("POST", "/v1/chat/completions")))
    assert openai_answer.status == 503 and openai_answer.headers["Retry-After"] == "1"
    error = orjson.loads(openai_answer.body)["error"]
    assert error["type"] == "server_error" and "limit of requests in flight" in error["message"]
    anthropic_answer = asyncio.run(gateway.handle(make_mocked_request("POST", "/v1/messages")))
    assert orjson.loads(anthropic_answer.body)["type"] == "error"
    assert gateway.in_flight.requests == 1  # the refused ones never entered
