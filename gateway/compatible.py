"""OpenAI-compatible upstreams by configuration (Groq, Together, Mistral, Azure OpenAI's v1 API,
DeepSeek, Fireworks, a local vLLM or Ollama...): any number, from TOKENTRAIL_UPSTREAMS.

Each entry names the provider, where it is, which environment variable holds its credential,
and how a request picks it: the `x-tokentrail-upstream: <name>` header, or a model prefix
(`groq/llama-3.3-70b-versatile` goes to `groq` as `llama-3.3-70b-versatile`). A request that
picks none goes to OpenAI as before. The name is what every record and report shows as the
call's provider, and what the flows price it by: genai-prices' provider id (groq, mistral,
together, azure, deepseek, fireworks, x-ai, ...) prices it; any other name is recorded with
its tokens and "unpriced" with the reason (prices can be added with TOKENTRAIL_PRICE_OVERRIDES).

Pure configuration and routing: nothing here knows aiohttp or Kafka.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

UPSTREAM_HEADER = "x-tokentrail-upstream"
"""Request header naming the upstream to use (never forwarded)."""
BUILT_IN = frozenset({"openai", "anthropic"})


def provider_base_url(url: str) -> str:
    """A provider URL as the gateway joins paths to it: http(s) only, no trailing slash, no `/v1`
    (the route adds it). Shared by the built-in upstream settings and configured upstreams."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {url!r}")
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


class CompatibleUpstream(BaseModel):
    """One OpenAI-compatible provider (one element of TOKENTRAIL_UPSTREAMS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    """Provider name in records and reports; genai-prices' provider id to be priced."""
    base_url: str
    """Origin and base path, e.g. https://api.groq.com/openai/v1 (request paths /v1/... are appended)."""
    api_key_env: str | None = None
    """Environment variable holding the gateway's credential for it (clients never send it)."""
    auth: Literal["bearer", "api-key"] = "bearer"
    """How the credential is sent: `Authorization: Bearer` or Azure's `api-key` header."""
    model_prefix: str | None = None
    """Requests whose model starts with this go here, with the prefix removed."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return provider_base_url(url)

    @field_validator("name")
    @classmethod
    def _not_built_in(cls, name: str) -> str:
        if name in BUILT_IN:
            raise ValueError(f"{name!r} is built in (TOKENTRAIL_UPSTREAM_{name.upper()}_URL)")
        return name

    @field_validator("model_prefix")
    @classmethod
    def _non_empty(cls, prefix: str | None) -> str | None:
        if prefix is not None and not prefix:
            raise ValueError("must not be empty (leave it out to route by header only)")
        return prefix

    def credential_header(self) -> bytes | None:
        """The encoded credential header line, or None when no key is configured or set."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if not key:
            return None
        if self.auth == "api-key":
            return b"api-key: " + key.encode() + b"\r\n"
        return b"Authorization: Bearer " + key.encode() + b"\r\n"


class _Upstreams(BaseModel):
    upstreams: list[CompatibleUpstream]

    @model_validator(mode="after")
    def _distinct(self) -> _Upstreams:
        names = [u.name for u in self.upstreams]
        prefixes = [u.model_prefix for u in self.upstreams if u.model_prefix]
        for label, values in (("name", names), ("model_prefix", prefixes)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"{label} used twice: {', '.join(repeated)}")
        return self


def parse_upstreams(text: str | None) -> list[CompatibleUpstream]:
    """TOKENTRAIL_UPSTREAMS: a JSON list, or the path of a JSON or YAML file holding one.
    ValueError (one line naming the entry and field) on anything wrong."""
    if text is None or not text.strip():
        return []
    source = text.strip()
    if not source.startswith(("[", "{")):
        path = Path(source).expanduser()
        try:
            source = path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if source.lstrip().startswith(("[", "{")):
            data = orjson.loads(source)
        else:
            import yaml

            data = yaml.safe_load(source)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"not a JSON (or YAML) list: {exc}") from None
    except Exception as exc:  # yaml.YAMLError: the file is not YAML either
        raise ValueError(f"not a JSON or YAML list: {' '.join(str(exc).split())}") from None
    try:
        return TypeAdapter(_Upstreams).validate_python({"upstreams": data}).upstreams
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"][1:]) or "value"
            problems.append(f"{where}: {error['msg']}")
        raise ValueError("; ".join(problems)) from None


class UpstreamRouter:
    """Which configured upstream a request of an OpenAI route goes to, if any."""

    def __init__(self, upstreams: list[CompatibleUpstream]) -> None:
        self.by_name = {u.name: u for u in upstreams}
        # Longest prefix first, so `azure/gpt` wins over `azure/` when both are configured.
        self.prefixed = sorted((u for u in upstreams if u.model_prefix), key=lambda u: -len(u.model_prefix or ""))

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def by_header(self, name: str) -> CompatibleUpstream:
        """The upstream a header names; KeyError (with the known names) if none."""
        found = self.by_name.get(name.strip().lower())
        if found is None:
            known = ", ".join(sorted(self.by_name)) or "none configured"
            raise KeyError(f"unknown upstream {name!r} in {UPSTREAM_HEADER} (TOKENTRAIL_UPSTREAMS has: {known})")
        return found

    def by_model(self, model: str | None) -> tuple[CompatibleUpstream, str] | None:
        """(upstream, model without its prefix) when the model carries a configured prefix."""
        if model:
            for upstream in self.prefixed:
                prefix = upstream.model_prefix or ""
                if model.startswith(prefix) and len(model) > len(prefix):
                    return upstream, model[len(prefix) :]
        return None
