"""Gateway settings (pydantic-settings, TOKENTRAIL_* except the providers' own key variables)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from gateway.compatible import CompatibleUpstream, parse_upstreams, provider_base_url
from tokentrail.settings import ENV, MIN_KEY_LENGTH


class GatewaySettings(BaseSettings):
    model_config = ENV

    gateway_host: str = "127.0.0.1"
    """TOKENTRAIL_GATEWAY_HOST: address to listen on (`--host` wins)."""
    gateway_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """TOKENTRAIL_GATEWAY_PORT: TCP port (`--port` wins)."""
    gateway_id: str = Field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    """TOKENTRAIL_GATEWAY_ID: this replica's name in every RawCall (default host:pid)."""

    upstream_openai_url: str = "https://api.openai.com"
    """TOKENTRAIL_UPSTREAM_OPENAI_URL: OpenAI origin; request paths (/v1/...) are appended."""
    upstream_anthropic_url: str = "https://api.anthropic.com"
    """TOKENTRAIL_UPSTREAM_ANTHROPIC_URL: Anthropic origin; request paths (/v1/...) are appended."""
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    """OPENAI_API_KEY: the gateway's own OpenAI credential (clients never send it)."""
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    """ANTHROPIC_API_KEY: the gateway's own Anthropic credential."""
    upstreams: str | None = None
    """TOKENTRAIL_UPSTREAMS: more OpenAI-compatible providers, as a JSON list or the path of a
    JSON/YAML file holding one: `[{"name": "groq", "base_url": "https://api.groq.com/openai/v1",
    "api_key_env": "GROQ_API_KEY", "model_prefix": "groq/"}]`; a request picks one by model
    prefix or the `x-tokentrail-upstream` header (docs/gateway.md)."""

    max_body_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    """TOKENTRAIL_MAX_BODY_BYTES: larger request bodies get 413."""
    upstream_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    """TOKENTRAIL_UPSTREAM_TIMEOUT_S: longest wait for the upstream's answer to start, or for
    the next piece of a stream; past it the client gets 504."""
    upstream_connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """TOKENTRAIL_UPSTREAM_CONNECT_TIMEOUT_S: TCP/TLS connect timeout to a provider."""

    spool_dir: Path | None = None
    """TOKENTRAIL_SPOOL_DIR: where records wait while Kafka is away (default $TOKENTRAIL_HOME/spool)."""
    spool_fsync_interval_s: Annotated[float, Field(gt=0)] = 0.02
    """TOKENTRAIL_SPOOL_FSYNC_INTERVAL_S: every record is written ahead (copied into the log's page
    cache before the answer ends) and fsynced at most this long after (group commit; an idle log is never
    woken): a power loss loses at most this much. 20 ms, as the producer's linger: 5 ms cost streamed
    calls +0.08 ms p50 at one connection on 2 cores (four times the fsyncs, each ~100-300 µs of CPU)."""
    spool_write_ahead: bool = True
    """TOKENTRAIL_SPOOL_WRITE_AHEAD: write every record to the spool before Kafka (false: only
    records Kafka did not take, as before the write-ahead log; a SIGKILL then loses what Kafka had not acknowledged)."""
    spool_max_bytes: Annotated[int, Field(gt=0)] = 8 << 30
    """TOKENTRAIL_SPOOL_MAX_BYTES: past this size records are not written ahead (counted in
    tokentrail_gateway_spool_write_failures_total and logged; answers are not affected)."""
    spool_segment_bytes: Annotated[int, Field(gt=0)] = 64 << 20
    """TOKENTRAIL_SPOOL_SEGMENT_BYTES: a spool segment file is closed at this size."""
    spool_segment_age_s: Annotated[float, Field(gt=0)] = 2.0
    """TOKENTRAIL_SPOOL_SEGMENT_AGE_S: a segment is also closed at this age, so acknowledged ones are deleted and
    a restart re-sends at most about this much."""
    kafka_message_timeout_ms: Annotated[int, Field(ge=1000)] = 5000
    """TOKENTRAIL_KAFKA_MESSAGE_TIMEOUT_MS: a record Kafka has not acknowledged by then goes to the spool."""
    kafka_linger_ms: Annotated[int, Field(ge=0)] = 20
    """TOKENTRAIL_KAFKA_LINGER_MS: producer batching delay (with the broker's acknowledgement time,
    the window a SIGKILL can lose). 20 ms measured best for tail latency on 2 cores: 5 ms wakes the producer's threads
    four times as often and doubled the gateway's p99 at one connection."""

    default_requests_per_minute: Annotated[int, Field(gt=0)] | None = None
    """TOKENTRAIL_DEFAULT_REQUESTS_PER_MINUTE: per-identity limit when no Limits record applies."""
    default_tokens_per_minute: Annotated[int, Field(gt=0)] | None = None
    """TOKENTRAIL_DEFAULT_TOKENS_PER_MINUTE: per-identity LLM-token limit when no Limits record applies."""

    admin_token: SecretStr | None = None
    """TOKENTRAIL_ADMIN_TOKEN: bearer token with operator rights on the key admin API
    (`/tokentrail/v1/keys`), at least 32 characters; unset, only tokentrail keys use the API
    (each for the keys delegated from itself)."""

    control_stale_after_s: Annotated[float, Field(ge=0)] = 30.0
    """TOKENTRAIL_CONTROL_STALE_AFTER_S: a replica that has not heard from Kafka's control topics
    (identities, controls) for this long refuses new requests with 503 and reports not ready on
    /readyz, since it could be admitting keys revoked elsewhere; 0 turns the check off."""

    max_in_flight: Annotated[int, Field(gt=0)] = 1024
    """TOKENTRAIL_MAX_IN_FLIGHT: requests handled at once; past it new ones get 503 with Retry-After."""
    max_in_flight_body_bytes: Annotated[int, Field(gt=0)] = 256 * 1024 * 1024
    """TOKENTRAIL_MAX_IN_FLIGHT_BODY_BYTES: request-body bytes held at once (a body of unknown
    length counts as TOKENTRAIL_MAX_BODY_BYTES); past it new requests get 503 with Retry-After."""
    auth_failure_event_interval_s: Annotated[float, Field(gt=0)] = 60.0
    """TOKENTRAIL_AUTH_FAILURE_EVENT_INTERVAL_S: at most one unauthorized_access_attempt event per
    client address per interval, carrying the number of failures since the previous one."""
    forward_headers: str = ""
    """TOKENTRAIL_FORWARD_HEADERS: client headers sent upstream beyond the built-in allow-list
    (comma-separated names; `x-mock-*` names a prefix)."""

    capture_max_bytes: Annotated[int, Field(gt=0, le=256 * 1024)] = 64 * 1024
    """TOKENTRAIL_CAPTURE_MAX_BYTES: each captured body (capture on) is redacted, then cut so that it
    takes at most this many bytes in the record (at most 256 KiB, so a record stays under Kafka's 1 MB)."""
    log_level: str = "INFO"
    """TOKENTRAIL_LOG_LEVEL: DEBUG logs every request; INFO logs decisions, failures and spooling."""

    @field_validator("admin_token")
    @classmethod
    def _long_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_KEY_LENGTH} characters")
        return token

    @field_validator("upstream_openai_url", "upstream_anthropic_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return provider_base_url(url)

    @field_validator("upstreams")
    @classmethod
    def _valid_upstreams(cls, text: str | None) -> str | None:
        parse_upstreams(text)  # every problem is reported at start-up, in one line
        return text

    def compatible_upstreams(self) -> list[CompatibleUpstream]:
        return parse_upstreams(self.upstreams)

    def spool_path(self, home: Path) -> Path:
        return self.spool_dir if self.spool_dir is not None else home / "spool"
