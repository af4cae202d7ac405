"""Captured bodies (capture on for the tenant): redacted first, then cut, and bounded in the record.

Redaction runs on the first `limit + REDACTION_MARGIN` bytes, so a secret that straddles the
cut is masked whole before anything is cut; patterns whose tail is unbounded (keys, PEM
blocks) mask to the end of that window. The result is then cut so that its JSON encoding (what
the record carries; control characters take 6 bytes there) stays within `limit` bytes, with a
`[TRUNCATED: N bytes]` marker naming the original size. A streamed answer is captured as its
assembled text (the text deltas of its events joined), so a secret a provider splits across
`data:` events is seen whole by the redaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from gateway.redaction import redact
from gateway.routes import ANTHROPIC

REDACTION_MARGIN = 16 * 1024
"""Bytes past the cut that are redacted with the kept part (longer than a 4096-bit PEM key)."""
STREAM_CAPTURE_FACTOR = 16
"""A stream's raw bytes are kept up to this many times the capture limit: event framing is
most of an SSE stream (about 150 bytes per token), the text the rest."""
_MARKER_RESERVE = 40


def captured_text(body: bytes, limit: int, original_size: int | None = None) -> str:
    """The redacted, bounded text of a captured body (see the module docstring).
    `original_size`: the body was already cut from that many bytes (a long stream)."""
    text = redact(body[: limit + REDACTION_MARGIN].decode("utf-8", "replace"))
    encoded = len(orjson.dumps(text))
    if original_size is None and encoded <= limit:
        return text
    room = max(limit - _MARKER_RESERVE, 0)
    while encoded > room and text:
        text = text[: int(len(text) * room / encoded)]
        encoded = len(orjson.dumps(text))
    return f"{text}[TRUNCATED: {original_size or len(body)} bytes]"


class StreamCapture:
    """The raw bytes of a streamed answer, kept up to a bound, turned into its text at the end."""

    __slots__ = ("_chunks", "_room", "_seen")

    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._room = limit * STREAM_CAPTURE_FACTOR
        self._seen = 0

    def add(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        if self._room > 0:
            self._chunks.append(chunk[: self._room])
            self._room -= len(chunk)

    def text(self, provider: str, limit: int) -> str:
        raw = b"".join(self._chunks)
        assembled = "".join(stream_pieces(provider, raw)).encode()
        if self._room < 0:
            return captured_text(assembled, limit, original_size=self._seen)
        return captured_text(assembled, limit)


def stream_pieces(provider: str, raw: bytes) -> Iterator[str]:
    """The text of a server-sent-event answer, piece by piece: OpenAI chat deltas (content,
    refusal, tool-call arguments), completions text, Responses API `*.delta` events, Anthropic
    `content_block_delta` text, JSON and thinking. Lines that are not JSON events are skipped."""
    for line in raw.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data.startswith(b"{"):
            continue
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if type(event) is dict:
            yield from (_anthropic_pieces(event) if provider == ANTHROPIC else _openai_pieces(event))


def _strings(container: Any, *names: str) -> Iterator[str]:
    if type(container) is dict:
        for name in names:
            value = container.get(name)
            if type(value) is str:
                yield value


def _openai_pieces(event: dict[str, Any]) -> Iterator[str]:
    event_type = event.get("type")
    if type(event_type) is str and event_type.endswith(".delta"):
        yield from _strings(event, "delta")
        return
    choices = event.get("choices")
    for choice in choices if type(choices) is list else ():
        yield from _strings(choice, "text")
        delta = choice.get("delta") if type(choice) is dict else None
        yield from _strings(delta, "content", "refusal")
        calls = delta.get("tool_calls") if type(delta) is dict else None
        for call in calls if type(calls) is list else ():
            yield from _strings(call.get("function") if type(call) is dict else None, "arguments")


def _anthropic_pieces(event: dict[str, Any]) -> Iterator[str]:
    if event.get("type") == "content_block_delta":
        yield from _strings(event.get("delta"), "text", "partial_json", "thinking")
