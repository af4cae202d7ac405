"""Settings of `tokentrail mock-upstream`; its flags win over these."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from tokentrail.settings import ENV

DEFAULT_PORT = 8900


class MockUpstreamSettings(BaseSettings):
    model_config = ENV

    mock_upstream_host: str = "127.0.0.1"
    """TOKENTRAIL_MOCK_UPSTREAM_HOST: address to listen on (loopback by default)."""

    mock_upstream_port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    """TOKENTRAIL_MOCK_UPSTREAM_PORT: TCP port; 0 picks a free one (the ready line names it)."""

    mock_upstream_workers: int = Field(default=1, ge=1, le=64)
    """TOKENTRAIL_MOCK_UPSTREAM_WORKERS: processes sharing the port, one core each."""
