"""What of the client's request goes upstream: the path the route matched and an allow-list of
headers (docs/gateway.md, "Forwarded upstream"). Pure functions over raw header pairs.

Everything not listed is dropped: hop-by-hop headers, `Host`, the client's tokentrail key,
cookies, proxy headers, and `OpenAI-Organization` / `OpenAI-Project`, which choose which
organization and project of the gateway's own credential is billed: the operator decides that
with the credential, not the client.
"""

from __future__ import annotations

from gateway import bounds

FORWARDED_HEADERS = frozenset(
    {
        b"content-type",
        b"accept",
        b"user-agent",
        b"idempotency-key",
        b"openai-beta",
        b"anthropic-version",
        b"anthropic-beta",
        b"x-request-id",
    }
)
"""Client headers sent upstream as they came (`x-request-id` once validated, see `bounds`)."""
FORWARDED_PREFIXES = (b"x-stainless-",)
"""Families of client headers sent upstream: the official SDKs' own telemetry."""
_DECODABLE_ENCODINGS = (b"gzip", b"deflate", b"identity")
_FILTERED = frozenset({b"accept-encoding", b"traceparent", b"tracestate"})
"""Client headers forwarded in part or only when valid."""


def forwarded_path(route_path: str, raw_query: str) -> bytes:
    """The request target sent upstream: the path the route matched, plus the client's query
    string only when it is plain printable ASCII (the Anthropic SDK sends `?beta=true`). An
    absolute-form target or an encoded path never reaches the provider."""
    if raw_query and bounds.visible_ascii(raw_query) and "#" not in raw_query:
        return f"{route_path}?{raw_query}".encode()
    return route_path.encode()


class AllowList:
    """The forwarded header names and name prefixes: the built-in ones plus the operator's
    TOKENTRAIL_FORWARD_HEADERS (comma-separated; `x-mock-*` names a prefix)."""

    __slots__ = ("names", "prefixes")

    def __init__(self, setting: str = "") -> None:
        extra = [name.strip().lower().encode() for name in setting.split(",") if name.strip()]
        self.names = FORWARDED_HEADERS | {name for name in extra if not name.endswith(b"*")}
        self.prefixes = FORWARDED_PREFIXES + tuple(name[:-1] for name in extra if name.endswith(b"*"))

    def allows(self, lowered: bytes) -> bool:
        return lowered in self.names or lowered.startswith(self.prefixes)


def upstream_headers(
    raw_headers: tuple[tuple[bytes, bytes], ...], allowed: AllowList, traceparent_valid: bool
) -> list[bytes]:
    """`Name: value` lines (CRLF-terminated) of the client headers `allowed`. `Accept-Encoding`
    keeps only encodings the gateway can read; a client's `traceparent` (and its `tracestate`)
    goes only when it is valid."""
    lines = []
    names, prefixes = allowed.names, allowed.prefixes  # hot path: no method call per header
    for name, value in raw_headers:
        lowered = name.lower()
        if lowered in names or lowered.startswith(prefixes):
            lines.append(name + b": " + value + b"\r\n")
        elif lowered not in _FILTERED:
            continue
        elif lowered == b"accept-encoding":
            accepted = [
                token for token in value.split(b",") if token.strip().split(b";")[0].lower() in _DECODABLE_ENCODINGS
            ]
            if accepted:
                lines.append(b"Accept-Encoding: " + b",".join(accepted).strip() + b"\r\n")
        elif traceparent_valid and (lowered == b"traceparent" or bounds.tracestate(value.decode("latin-1"))):
            lines.append(name + b": " + value + b"\r\n")
    return lines
