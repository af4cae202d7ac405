"""Errors the gateway itself answers, in the shape of the provider the client speaks to, so
the official SDKs raise their usual exception types (AuthenticationError, RateLimitError...)."""

from __future__ import annotations

import orjson

from gateway.routes import ANTHROPIC

OPENAI_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "frozen"),
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
    502: ("server_error", "upstream_unreachable"),
    503: ("server_error", "gateway_not_ready"),
    504: ("server_error", "upstream_timeout"),
}
ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
}


def error_body(provider: str, status: int, message: str) -> tuple[bytes, str, str | None]:
    """(JSON body, error type, error code) of a gateway-made error."""
    if provider == ANTHROPIC:
        error_type = ANTHROPIC_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": error_type, "message": message}}
        return orjson.dumps(body), error_type, None
    error_type, code = OPENAI_TYPES.get(status, ("server_error", None))
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return orjson.dumps(body), error_type, code


def provider_error(body: bytes) -> tuple[str | None, str | None]:
    """(type, code) from an upstream error body of either provider; (None, None) if unreadable."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, None
    error_type, code = error.get("type"), error.get("code")
    return (
        error_type if isinstance(error_type, str) else None,
        str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else None,
    )
