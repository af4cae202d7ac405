"""The provider routes the gateway serves, and what each records (provider, genai-prices flavor)."""

from __future__ import annotations

from dataclasses import dataclass

OPENAI = "openai"
ANTHROPIC = "anthropic"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    provider: str
    api_flavor: str
    """genai-prices api flavor (`/v1/completions` prices as chat, Anthropic is `default`)."""
    streams_usage_on_request: bool = False
    """OpenAI streams that only report usage when asked (stream_options.include_usage)."""


ROUTES: dict[str, Route] = {
    route.path: route
    for route in (
        Route("POST", "/v1/chat/completions", OPENAI, "chat", streams_usage_on_request=True),
        Route("POST", "/v1/completions", OPENAI, "chat", streams_usage_on_request=True),
        Route("POST", "/v1/embeddings", OPENAI, "embeddings"),
        Route("POST", "/v1/responses", OPENAI, "responses"),
        Route("GET", "/v1/models", OPENAI, "models"),
        Route("POST", "/v1/messages", ANTHROPIC, "default"),
    )
}

ANTHROPIC_MODELS = Route("GET", "/v1/models", ANTHROPIC, "default")
"""`GET /v1/models` from the Anthropic SDK (it sends anthropic-version) goes to Anthropic."""


def provider_of_path(path: str, has_anthropic_version: bool) -> str:
    """Whose error shape a request expects, even on a path we do not serve."""
    return ANTHROPIC if has_anthropic_version or path.startswith("/v1/messages") else OPENAI
