"""Read usage, served model and errors from what the provider answered, without changing it.

`body_usage` reads a whole JSON answer. `StreamScanner` watches a server-sent-event stream as
it is relayed: it passes every chunk on unchanged and inspects complete events on the side,
except when the gateway itself asked an OpenAI stream for usage (`strip_injected_usage`):
then it removes exactly what that request added (the `"usage":null` field of each chunk and
the final usage-only chunk), so the client receives the bytes it would have without us.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from gateway.routes import ANTHROPIC

FULL_PARSE_LIMIT = 64 * 1024
"""Bodies up to this size are parsed whole (microseconds); in larger ones the top-level keys
are searched (a full parse of an 8.9 MB embeddings answer took 400 ms on the dev machine)."""
MAX_CANDIDATES = 16
VALUE_WINDOW = 65536
"""Longest `usage` / `model` value read."""
_DECODER = json.JSONDecoder()
_INJECTED_NULL_USAGE = b',"usage":null'


def body_usage(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(usage block, served model) of a non-streamed answer; Nones when absent."""
    if len(body) <= FULL_PARSE_LIMIT:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None, None
        if not isinstance(parsed, dict):
            return None, None
        usage, model = parsed.get("usage"), parsed.get("model")
    else:
        usage, model = _top_level_value(body, b'"usage"'), _top_level_value(body, b'"model"')
    return (usage if isinstance(usage, dict) else None), (model if isinstance(model, str) else None)


def _top_level_value(body: bytes, quoted_key: bytes) -> Any:
    """The value of a key of the top-level object, without parsing the whole body. Providers
    put `usage` and `model` after the bulk of the answer, so occurrences are tried from the
    last one back, and one is taken only if it is a key of the top-level object: the rest of
    the body after its value must close exactly one object (`{"_":0` + rest parses). An
    occurrence inside a nested object (a client's `metadata` after `usage`) leaves a second
    closing brace and is skipped; inside a string its quotes are escaped, so it never
    matches. Past `MAX_CANDIDATES` occurrences the body is parsed whole."""
    end = len(body)
    for _ in range(MAX_CANDIDATES):
        at = body.rfind(quoted_key, 0, end)
        if at < 0:
            return None
        end = at
        found = _value_after(body, at + len(quoted_key))
        if found is None:
            continue
        value, value_end = found
        try:
            if isinstance(orjson.loads(b'{"_":0' + body[value_end:]), dict):
                return value
        except orjson.JSONDecodeError:
            continue
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed.get(quoted_key[1:-1].decode()) if isinstance(parsed, dict) else None


def _value_after(body: bytes, at: int) -> tuple[Any, int] | None:
    """(value, offset just past it) of `: value` starting at `at`; None if it is not a key."""
    window = body[at : at + VALUE_WINDOW].decode("utf-8", "surrogateescape")
    stripped = window.lstrip()
    if not stripped.startswith(":"):
        return None
    text = stripped[1:].lstrip()
    offset = len(window) - len(text)
    try:
        value, index = _DECODER.raw_decode(text)
    except ValueError:
        return None
    return value, at + len(window[: offset + index].encode("utf-8", "surrogateescape"))


def token_count(usage: dict[str, Any] | None) -> int:
    """LLM tokens a call used, for token rate limits (both providers' field names)."""
    if not usage:
        return 0
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    return sum(
        value
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "prompt_tokens",
            "completion_tokens",
        )
        if isinstance(value := usage.get(name), int)
    )


class StreamScanner:
    def __init__(self, provider: str, strip_injected_usage: bool = False) -> None:
        self.anthropic = provider == ANTHROPIC
        self.strip = strip_injected_usage
        self.usage: dict[str, Any] | None = None
        self.served_model: str | None = None
        self.error_type: str | None = None
        self.error_code: str | None = None
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Inspect a relayed chunk; returns what to send on (the chunk itself unless stripping)."""
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return b"" if self.strip else chunk
        self._pending = data[end + 2 :]
        events = data[:end].split(b"\n\n")
        if not self.strip:
            for event in events:
                self._inspect(event)
            return chunk
        kept = [rewritten for event in events if (rewritten := self._rewrite(event)) is not None]
        return b"".join(event + b"\n\n" for event in kept)

    def finish(self) -> bytes:
        """End of stream: inspect a last event without its blank line; returns bytes still owed."""
        rest, self._pending = self._pending, b""
        if not rest.strip():
            return rest if self.strip else b""
        if not self.strip:
            self._inspect(rest)
            return b""
        return self._rewrite(rest) or b""

    def _rewrite(self, event: bytes) -> bytes | None:
        if b'"choices":[]' in event and _has_object(event, b'"usage"'):
            self._inspect(event)
            return None
        if self.served_model is None:
            self._inspect(event)
        return event.replace(_INJECTED_NULL_USAGE, b"")

    def _inspect(self, event: bytes) -> None:
        if b"\r" in event:
            event = event.replace(b"\r", b"")
        if self.anthropic:
            self._anthropic_event(event)
        elif self.served_model is None or _has_object(event, b'"usage"') or _has_object(event, b'"error"'):
            self._openai_event(event)

    def _anthropic_event(self, event: bytes) -> None:
        if not event.startswith((b"event: message_start", b"event: message_delta", b"event: error")):
            return
        value = _data_of(event)
        if not isinstance(value, dict):
            return
        kind = value.get("type")
        if kind == "message_start" and isinstance(message := value.get("message"), dict):
            if isinstance(model := message.get("model"), str):
                self.served_model = model
            if isinstance(usage := message.get("usage"), dict):
                self.usage = dict(usage)
        elif kind == "message_delta" and isinstance(usage := value.get("usage"), dict):
            self.usage = {**(self.usage or {}), **{k: v for k, v in usage.items() if v is not None}}
        elif kind == "error" and isinstance(error := value.get("error"), dict):
            self.error_type = error.get("type") if isinstance(error.get("type"), str) else "error"

    def _openai_event(self, event: bytes) -> None:
        value = _data_of(event)
        if not isinstance(value, dict):
            return
        # Responses API events wrap the response object; chat/completions chunks are flat.
        response = wrapped if isinstance(wrapped := value.get("response"), dict) else value
        if isinstance(model := response.get("model"), str):
            self.served_model = model
        if isinstance(usage := response.get("usage"), dict):
            self.usage = usage
        error = response.get("error") if isinstance(response.get("error"), dict) else None
        if error is None and value.get("type") == "error":
            error = value
        if error is not None:
            self.error_type = str(error.get("type") or error.get("code") or "error")
            if error.get("code") is not None:
                self.error_code = str(error["code"])


def _has_object(event: bytes, key: bytes) -> bool:
    """Whether `"key": {` occurs (compact or spaced), i.e. the field is set, not null."""
    return key + b":{" in event or key + b": {" in event


def _data_of(event: bytes) -> Any:
    """The JSON of an event's data lines; None for [DONE], comments or bad JSON."""
    parts = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not parts:
        return None
    data = parts[0] if len(parts) == 1 else b"\n".join(parts)
    if data == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
