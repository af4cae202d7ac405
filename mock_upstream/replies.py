"""What the mock provider answers: pure functions from (method, path, headers, body) to a Reply.

Nothing here knows about sockets or the event loop. A Reply depends on its inputs only (ids are
hashes of the request, `created` is a fixed instant), which is what lets the server cache
replies and lets tests compare bytes. Shapes follow the types of the `openai` and `anthropic`
SDKs (ChatCompletion, ChatCompletionChunk, Completion, CreateEmbeddingResponse, Response and
its stream events, Message and the raw message stream events).
"""

from __future__ import annotations

import base64
import hashlib
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus

import orjson

MOCK_CREATED = 1735689600
"""Every `created`/`created_at` is 2025-01-01T00:00:00Z, so equal requests give equal bytes."""
DEFAULT_OUTPUT_TOKENS = 16
"""Output tokens when the request sets no max_tokens."""
MAX_OUTPUT_TOKENS = 4096
"""Cap on output tokens taken from max_tokens, and on the words of generated text."""
MAX_USAGE_VALUE = 10**9
MAX_DELAY_MS = 600_000
STREAM_DELTAS = 8
"""A streamed answer arrives in (at most) this many text deltas, so relays can be observed."""
DEFAULT_EMBEDDING_DIMENSIONS = 1536
MAX_EMBEDDING_DIMENSIONS = 4096
LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco"
).split()
OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini", "text-embedding-3-small")
ANTHROPIC_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6")

CONTROL_HEADERS = frozenset(
    {
        "x-mock-status",
        "x-mock-usage",
        "x-mock-error-type",
        "x-mock-served-model",
        "x-mock-latency-ms",
        "x-mock-chunk-delay-ms",
    }
)
TIMING_HEADERS = frozenset({"x-mock-latency-ms", "x-mock-chunk-delay-ms"})
"""Control headers that change when bytes are sent (see `delays`), not which (when valid)."""
SHAPE_HEADERS = frozenset({"anthropic-version"})
"""Other request headers a reply depends on: the Anthropic SDK sends anthropic-version, which
picks the Anthropic shape for /v1/models and for errors on routes that are not /v1/messages."""

JSON = "application/json"
EVENT_STREAM = "text/event-stream; charset=utf-8"

# Error type (and OpenAI error code) per status, as each provider documents them.
OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    405: ("invalid_request_error", None),
    409: ("invalid_request_error", None),
    413: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}
ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
REASONS = {529: "Overloaded"}


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: a whole body, or (`events` not None) server-sent events sent one by one."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    events: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts, in the provider's own meaning: `input` is OpenAI's prompt_tokens (cached
    included) and Anthropic's input_tokens (cache reads and writes excluded)."""

    input: int
    output: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(frozen=True, slots=True)
class Controls:
    """The x-mock-* request headers, validated."""

    status: int = 200
    usage: Mapping[str, int] | None = None
    error_type: str | None = None
    served_model: str | None = None
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0


class RequestError(Exception):
    """A request the provider would refuse: becomes a 4xx in the provider's error shape."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


@dataclass(frozen=True, slots=True)
class Call:
    """One parsed request, as the route handlers see it."""

    body: dict
    controls: Controls
    seed: str
    """Hex hash of method, path and body: the deterministic part of every id."""

    @property
    def model(self) -> str:
        return self.controls.served_model or self.body["model"]


def parse_controls(headers: Mapping[str, str]) -> Controls:
    """Read x-mock-* headers (names lower-case); RequestError names the header that is wrong."""
    controls = Controls()
    if "x-mock-status" in headers:
        status = _int_header(headers, "x-mock-status")
        if status != 200 and not 400 <= status <= 599:
            raise RequestError(f"x-mock-status must be 200 or 400-599, got {status}")
        controls = replace(controls, status=status)
    if "x-mock-usage" in headers:
        controls = replace(controls, usage=parse_usage(headers["x-mock-usage"]))
    if headers.get("x-mock-error-type"):
        controls = replace(controls, error_type=headers["x-mock-error-type"])
    if headers.get("x-mock-served-model"):
        controls = replace(controls, served_model=headers["x-mock-served-model"])
    for name, field in (("x-mock-latency-ms", "latency_ms"), ("x-mock-chunk-delay-ms", "chunk_delay_ms")):
        if name in headers:
            controls = replace(controls, **{field: _delay_header(headers, name)})
    return controls


def delays(headers: Mapping[str, str]) -> tuple[float, float]:
    """(latency, chunk delay) in seconds; zero when absent or invalid, since `reply` then
    answers 400 naming the bad header."""
    try:
        return tuple(
            _delay_header(headers, name) / 1000.0 if name in headers else 0.0
            for name in ("x-mock-latency-ms", "x-mock-chunk-delay-ms")
        )
    except RequestError:
        return 0.0, 0.0


def parse_usage(text: str) -> dict[str, int]:
    """`input=1200,output=300,cached=200,cache_write=100,reasoning=50` (any subset)."""
    fields = set(Usage.__dataclass_fields__)
    usage: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in fields:
            raise RequestError(f"x-mock-usage: unknown field {name!r}; use {', '.join(sorted(fields))}")
        try:
            number = int(value)
        except ValueError:
            number = -1
        if not 0 <= number <= MAX_USAGE_VALUE:
            raise RequestError(f"x-mock-usage: {name} must be an integer 0-{MAX_USAGE_VALUE}, got {value.strip()!r}")
        usage[name] = number
    return usage


def _int_header(headers: Mapping[str, str], name: str) -> int:
    try:
        return int(headers[name])
    except ValueError:
        raise RequestError(f"{name} must be an integer, got {headers[name]!r}") from None


def _delay_header(headers: Mapping[str, str], name: str) -> float:
    try:
        value = float(headers[name])
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_DELAY_MS:
        raise RequestError(f"{name} must be a number of milliseconds 0-{MAX_DELAY_MS}, got {headers[name]!r}")
    return value


# --- the entry point --------------------------------------------------------------------------


def reply(method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
    """The answer to one request. `headers` holds the lower-case names of CONTROL_HEADERS and
    SHAPE_HEADERS the request carried (others do not matter)."""
    path = target.partition("?")[0]
    anthropic = path.startswith("/v1/messages") or "anthropic-version" in headers
    seed = hashlib.blake2b(f"{method} {target}\n".encode() + body, digest_size=12).hexdigest()
    error = _anthropic_error if anthropic else _openai_error
    methods = ROUTES.get(path)
    if methods is None:
        return error(404, f"Invalid URL ({method} {path})", None, None, seed)
    handler = methods.get(method)
    if handler is None:
        return error(405, f"Method {method} not allowed on {path}", None, None, seed)
    try:
        controls = parse_controls(headers)
        if controls.status >= 400:
            phrase = reason_phrase(controls.status)
            return error(controls.status, f"{phrase} (forced by x-mock-status)", None, controls.error_type, seed)
        if method == "GET":
            return handler(headers, seed)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"could not parse the JSON body of your request: {exc}") from None
        if not isinstance(parsed, dict):
            raise RequestError("the request body must be a JSON object")
        if not isinstance(parsed.get("model"), str) or not parsed["model"]:
            raise RequestError("you must provide a model parameter (a non-empty string)", "model")
        return handler(Call(parsed, controls, seed))
    except RequestError as exc:
        return error(exc.status, exc.message, exc.param, None, seed)


# --- shared helpers ---------------------------------------------------------------------------


def estimate_tokens(value: object) -> int:
    """Deterministic stand-in for a tokenizer: about four bytes of JSON per token."""
    return len(orjson.dumps(value)) // 4 + 1


def default_usage(call: Call, prompt: object, max_tokens_field: str | tuple[str, ...]) -> Usage:
    """Input from the prompt's size, output from max_tokens (capped) or DEFAULT_OUTPUT_TOKENS,
    then x-mock-usage on top."""
    fields = (max_tokens_field,) if isinstance(max_tokens_field, str) else max_tokens_field
    output = DEFAULT_OUTPUT_TOKENS
    for field in fields:
        limit = call.body.get(field)
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise RequestError(f"{field} must be a positive integer", field)
            output = min(limit, MAX_OUTPUT_TOKENS)
            break
    usage = Usage(input=estimate_tokens(prompt), output=output)
    return replace(usage, **call.controls.usage) if call.controls.usage else usage


def answer_words(usage: Usage) -> list[str]:
    """The answer text as words: one word per output token, capped."""
    count = min(usage.output, MAX_OUTPUT_TOKENS)
    return [LOREM[i % len(LOREM)] for i in range(count)]


def split_deltas(words: list[str]) -> list[str]:
    """At most STREAM_DELTAS pieces that concatenate to ' '.join(words)."""
    n = len(words)
    pieces = []
    for k in range(STREAM_DELTAS):
        chunk = words[k * n // STREAM_DELTAS : (k + 1) * n // STREAM_DELTAS]
        if chunk:
            pieces.append((" " if pieces else "") + " ".join(chunk))
    return pieces


def _stream_flag(call: Call) -> bool:
    stream = call.body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be a boolean", "stream")
    return stream


def _json_reply(value: object, request_id_header: str, seed: str, status: int = 200) -> Reply:
    return Reply(status, (("content-type", JSON), (request_id_header, f"req_{seed}")), orjson.dumps(value))


def _stream_reply(events: list[bytes], request_id_header: str, seed: str) -> Reply:
    headers = (("content-type", EVENT_STREAM), ("cache-control", "no-cache"), (request_id_header, f"req_{seed}"))
    return Reply(200, headers, events=tuple(events))


def _data_event(value: object) -> bytes:
    return b"data: " + orjson.dumps(value) + b"\n\n"


def _named_event(name: str, value: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(value) + b"\n\n"


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return REASONS.get(status, "Error")


# --- errors -----------------------------------------------------------------------------------


def _openai_error(status: int, message: str, param: str | None, error_type: str | None, seed: str) -> Reply:
    default_type, code = OPENAI_ERRORS.get(status, ("server_error", None))
    body = {"error": {"message": message, "type": error_type or default_type, "param": param, "code": code}}
    return _with_retry_after(_json_reply(body, "x-request-id", seed, status))


def _anthropic_error(status: int, message: str, param: str | None, error_type: str | None, seed: str) -> Reply:
    default_type = ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    if param:
        message = f"{param}: {message}"
    body = {
        "type": "error",
        "error": {"type": error_type or default_type, "message": message},
        "request_id": f"req_{seed}",
    }
    return _with_retry_after(_json_reply(body, "request-id", seed, status))


def _with_retry_after(reply: Reply) -> Reply:
    if reply.status == 429:
        return replace(reply, headers=(*reply.headers, ("retry-after", "1")))
    return reply


# --- OpenAI -----------------------------------------------------------------------------------


def _openai_usage(usage: Usage) -> dict:
    prompt_details = {"cached_tokens": usage.cached, "audio_tokens": 0}
    if usage.cache_write:
        prompt_details["cache_write_tokens"] = usage.cache_write
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _include_usage(call: Call) -> bool:
    options = call.body.get("stream_options") or {}
    return isinstance(options, dict) and options.get("include_usage") is True


def openai_chat(call: Call) -> Reply:
    messages = call.body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty array", "messages")
    stream = _stream_flag(call)
    usage = default_usage(call, messages, ("max_completion_tokens", "max_tokens"))
    words = answer_words(usage)
    head = {
        "id": f"chatcmpl-{call.seed}",
        "object": "chat.completion",
        "created": MOCK_CREATED,
        "model": call.model,
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }
    if not stream:
        message = {"role": "assistant", "content": " ".join(words), "refusal": None, "annotations": []}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return _json_reply({**head, "choices": [choice], "usage": _openai_usage(usage)}, "x-request-id", call.seed)

    include_usage = _include_usage(call)
    head["object"] = "chat.completion.chunk"

    def chunk(delta: dict, finish_reason: str | None) -> bytes:
        value = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            value["usage"] = None
        return _data_event(value)

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events += [chunk({"content": piece}, None) for piece in split_deltas(words)]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append(_data_event({**head, "choices": [], "usage": _openai_usage(usage)}))
    events.append(b"data: [DONE]\n\n")
    return _stream_reply(events, "x-request-id", call.seed)


def openai_completion(call: Call) -> Reply:
    prompt = call.body.get("prompt")
    if not isinstance(prompt, (str, list)):
        raise RequestError("prompt must be a string or an array", "prompt")
    stream = _stream_flag(call)
    usage = default_usage(call, prompt, "max_tokens")
    words = answer_words(usage)
    head = {
        "id": f"cmpl-{call.seed}",
        "object": "text_completion",
        "created": MOCK_CREATED,
        "model": call.model,
        "system_fingerprint": "fp_mock",
    }
    if not stream:
        choice = {"text": " ".join(words), "index": 0, "logprobs": None, "finish_reason": "stop"}
        return _json_reply({**head, "choices": [choice], "usage": _openai_usage(usage)}, "x-request-id", call.seed)

    include_usage = _include_usage(call)

    def chunk(text: str, finish_reason: str | None) -> bytes:
        value = {**head, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            value["usage"] = None
        return _data_event(value)

    events = [chunk(piece, None) for piece in split_deltas(words)]
    events.append(chunk("", "stop"))
    if include_usage:
        events.append(_data_event({**head, "choices": [], "usage": _openai_usage(usage)}))
    events.append(b"data: [DONE]\n\n")
    return _stream_reply(events, "x-request-id", call.seed)


def openai_embeddings(call: Call) -> Reply:
    raw = call.body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
        inputs = [raw]
    elif isinstance(raw, list) and raw:
        inputs = raw
    else:
        raise RequestError("input must be a non-empty string or array", "input")
    dimensions = call.body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    if not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
        raise RequestError(f"dimensions must be an integer 1-{MAX_EMBEDDING_DIMENSIONS}", "dimensions")
    encoding = call.body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise RequestError("encoding_format must be 'float' or 'base64'", "encoding_format")
    usage = default_usage(call, inputs, ())
    data = []
    for index, item in enumerate(inputs):
        vector = embedding_vector(orjson.dumps(item), dimensions)
        encoded = base64.b64encode(array("f", vector).tobytes()).decode() if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    body = {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": usage.input, "total_tokens": usage.input},
    }
    return _json_reply(body, "x-request-id", call.seed)


def embedding_vector(text: bytes, dimensions: int) -> list[float]:
    """A fixed pseudo-random vector in [-1, 1) per input: equal inputs embed equally."""
    values = array("h", hashlib.shake_256(text).digest(2 * dimensions))
    return [v / 32768.0 for v in values]


def openai_responses(call: Call) -> Reply:
    prompt = call.body.get("input")
    if not isinstance(prompt, (str, list)):
        raise RequestError("input must be a string or an array", "input")
    stream = _stream_flag(call)
    usage = default_usage(call, [call.body.get("instructions"), prompt], "max_output_tokens")
    text = " ".join(answer_words(usage))
    message_id = f"msg_{call.seed}"
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    message = {"id": message_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    response = {
        "id": f"resp_{call.seed}",
        "object": "response",
        "created_at": MOCK_CREATED,
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": call.body.get("instructions"),
        "max_output_tokens": call.body.get("max_output_tokens"),
        "model": call.model,
        "output": [message],
        "parallel_tool_calls": True,
        "previous_response_id": call.body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "metadata": {},
        "user": None,
        "usage": {
            "input_tokens": usage.input,
            "input_tokens_details": {"cached_tokens": usage.cached, "cache_write_tokens": usage.cache_write},
            "output_tokens": usage.output,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning},
            "total_tokens": usage.input + usage.output,
        },
    }
    if not stream:
        return _json_reply(response, "x-request-id", call.seed)

    events: list[bytes] = []

    def emit(kind: str, **fields) -> None:
        events.append(_named_event(kind, {"type": kind, "sequence_number": len(events), **fields}))

    started = {**response, "status": "in_progress", "output": [], "usage": None}
    emit("response.created", response=started)
    emit("response.in_progress", response=started)
    emit("response.output_item.added", output_index=0, item={**message, "status": "in_progress", "content": []})
    where = {"item_id": message_id, "output_index": 0, "content_index": 0}
    emit("response.content_part.added", **where, part={**part, "text": ""})
    for piece in split_deltas(text.split()):
        emit("response.output_text.delta", **where, delta=piece, logprobs=[])
    emit("response.output_text.done", **where, text=text, logprobs=[])
    emit("response.content_part.done", **where, part=part)
    emit("response.output_item.done", output_index=0, item=message)
    emit("response.completed", response=response)
    return _stream_reply(events, "x-request-id", call.seed)


def models(headers: Mapping[str, str], seed: str) -> Reply:
    """GET /v1/models, in the Anthropic shape when the caller sends anthropic-version."""
    if "anthropic-version" in headers:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z", "lifecycle": "active"}
            for m in ANTHROPIC_MODELS
        ]
        body = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        return _json_reply(body, "request-id", seed)
    data = [{"id": m, "object": "model", "created": MOCK_CREATED, "owned_by": "openai"} for m in OPENAI_MODELS]
    data += [{"id": m, "object": "model", "created": MOCK_CREATED, "owned_by": "anthropic"} for m in ANTHROPIC_MODELS]
    return _json_reply({"object": "list", "data": data}, "x-request-id", seed)


def healthz(headers: Mapping[str, str], seed: str) -> Reply:
    return Reply(200, (("content-type", JSON),), b'{"status":"ok"}')


# --- Anthropic --------------------------------------------------------------------------------


def anthropic_messages(call: Call) -> Reply:
    messages = call.body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty array", "messages")
    if "max_tokens" not in call.body:
        raise RequestError("Field required", "max_tokens")
    stream = _stream_flag(call)
    usage = default_usage(call, [call.body.get("system"), messages], "max_tokens")
    words = answer_words(usage)
    usage_block = {
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
        "output_tokens": usage.output,
        "service_tier": "standard",
    }
    message = {
        "id": f"msg_{call.seed}",
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [{"type": "text", "text": " ".join(words)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage_block,
    }
    if not stream:
        return _json_reply(message, "request-id", call.seed)

    def event(kind: str, **fields) -> bytes:
        return _named_event(kind, {"type": kind, **fields})

    # As the API does: message_start carries input usage and a token or so of output; the
    # final output_tokens come in message_delta.
    started = {**message, "content": [], "stop_reason": None, "usage": {**usage_block, "output_tokens": 1}}
    events = [
        event("message_start", message=started),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("ping"),
    ]
    events += [
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
        for piece in split_deltas(words)
    ]
    events += [
        event("content_block_stop", index=0),
        event(
            "message_delta",
            delta={"stop_reason": "end_turn", "stop_sequence": None},
            usage={"output_tokens": usage.output},
        ),
        event("message_stop"),
    ]
    return _stream_reply(events, "request-id", call.seed)


ROUTES: dict[str, dict[str, Callable]] = {
    "/v1/chat/completions": {"POST": openai_chat},
    "/v1/completions": {"POST": openai_completion},
    "/v1/embeddings": {"POST": openai_embeddings},
    "/v1/responses": {"POST": openai_responses},
    "/v1/messages": {"POST": anthropic_messages},
    "/v1/models": {"GET": models},
    "/healthz": {"GET": healthz},
}
