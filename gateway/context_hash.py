"""The request-shape context hash: which "kind" of request failed, without any user text.

Two calls have the same context hash when they hit the same endpoint with the same model,
the same set of tool names, the same response format type and the same system prompt. It is
one part of a failure signature (docs/detection.md): a pattern like "every call of the support bot's
JSON-schema prompt to gpt-4o fails with 400" is visible across identities while the user's
messages, which differ on every call, never enter it.

What is read, per API (from the body the gateway already parsed for `model`):
- tools: OpenAI chat `tools[].function.name` (and legacy `functions[].name`), Responses
  `tools[].name` or, for built-in tools, `tools[].type`; Anthropic `tools[].name`.
- response format: chat `response_format.type`, Responses `text.format.type`.
- system prompt: chat `system`/`developer` messages at the head of `messages` (text content
  only; a system message after the first user turn is conversation, not configuration),
  Responses `instructions`, Anthropic `system` (string or text blocks). Only its digest is kept.
Cost: a few dict lookups and one BLAKE2b digest (bench/gateway/context_hash.py); messages after the leading system ones are
never touched, so a long conversation costs the same as a short one.
"""

from __future__ import annotations

import hashlib
from typing import Any

SEPARATOR = b"\x1f"
SYSTEM_ROLES = ("system", "developer")


def _text_of(content: Any) -> str:
    """Text of a message content: a string, or the `text` of text parts/blocks (others ignored)."""
    if type(content) is str:
        return content
    if type(content) is list:
        return "\n".join(part["text"] for part in content if type(part) is dict and type(part.get("text")) is str)
    return ""


def _system_prompt(body: dict[str, Any]) -> str:
    system = body.get("system")  # Anthropic
    if system is not None:
        return _text_of(system)
    instructions = body.get("instructions")  # OpenAI Responses
    if type(instructions) is str:
        return instructions
    messages = body.get("messages")
    if type(messages) is not list:
        messages = body.get("input")  # Responses input items may carry system/developer messages
        if type(messages) is not list:
            return ""
    texts = []
    for message in messages:
        if type(message) is not dict or message.get("role") not in SYSTEM_ROLES:
            break
        texts.append(_text_of(message.get("content")))
    return "\n".join(texts)


def _tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for key in ("tools", "functions"):
        tools = body.get(key)
        if type(tools) is not list:
            continue
        for tool in tools:
            if type(tool) is not dict:
                continue
            function = tool.get("function")
            name = function.get("name") if type(function) is dict else tool.get("name", tool.get("type"))
            if type(name) is str:
                names.append(name)
    return sorted(set(names))


def _response_format(body: dict[str, Any]) -> str:
    fmt = body.get("response_format")
    if type(fmt) is not dict:
        text = body.get("text")
        fmt = text.get("format") if type(text) is dict else None
    kind = fmt.get("type") if type(fmt) is dict else None
    return kind if type(kind) is str else ""


def context_hash(endpoint: str, body: dict[str, Any]) -> str:
    """16 hex digits identifying the request's shape (see the module docstring)."""
    model = body.get("model")
    tools = body.get("tools") or body.get("functions")
    shape = SEPARATOR.join(
        (
            endpoint.encode(),
            model.encode() if type(model) is str else b"",
            ",".join(_tool_names(body)).encode() if tools else b"",
            _response_format(body).encode(),
            b"",  # the system prompt follows
        )
    )
    digest = hashlib.blake2b(shape, digest_size=8)
    system = _system_prompt(body)
    if system:
        digest.update(system.encode())
    return digest.hexdigest()
