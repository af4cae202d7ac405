"""Settings every process reads (docs/architecture.md), one pydantic-settings class per concern.

Process-specific settings (gateway, flows, storage) live beside their code and reuse
`ENV` below. A CLI flag, where there is one, wins over the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokentrail.errors import ConfigError

__all__ = ["ENV", "ConfigError", "CoreSettings", "load"]

ENV = SettingsConfigDict(env_prefix="TOKENTRAIL_", extra="ignore", env_file=None, use_attribute_docstrings=True)
"""Shared by every settings class; field docstrings become descriptions (the README table)."""
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def default_home() -> Path:
    """The per-user state directory, the same from every working directory:
    $XDG_STATE_HOME/tokentrail, else ~/.local/state/tokentrail (XDG Base Directory spec)."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "tokentrail"


def absolute_home(home: Path) -> Path:
    """TOKENTRAIL_HOME as an absolute path, so every message names the real directory."""
    return home.expanduser().absolute()


def broker_state_file(home: Path) -> Path:
    """Where `tokentrail kafka up` records the broker it started: {"bootstrap", "pid", "port", ...}."""
    return home / "kafka" / "broker.json"


class CoreSettings(BaseSettings):
    model_config = ENV

    home: Path = Field(default_factory=default_home)
    """TOKENTRAIL_HOME: state directory (broker data and pid, embedded ClickHouse, spool, logs);
    default $XDG_STATE_HOME/tokentrail, else ~/.local/state/tokentrail. A relative value is
    made absolute against the directory the process starts in."""

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        return absolute_home(home)

    kafka_bootstrap: str | None = None
    """TOKENTRAIL_KAFKA_BOOTSTRAP: Kafka bootstrap servers; unset means the broker
    `tokentrail kafka up` started in TOKENTRAIL_HOME, else 127.0.0.1:9092."""

    signing_key: SecretStr | None = None
    """TOKENTRAIL_SIGNING_KEY: HMAC-SHA256 key for RawCall signatures. Required by the
    gateway and the flows; never printed."""

    topic_prefix: str = ""
    """TOKENTRAIL_TOPIC_PREFIX: prepended to every topic name (tests, shared clusters)."""

    def bootstrap(self) -> str:
        """The bootstrap servers to use, following the precedence in the docstring above."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        state = broker_state_file(self.home)
        if state.exists():
            try:
                return str(orjson.loads(state.read_bytes())["bootstrap"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
        return DEFAULT_BOOTSTRAP

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def require_signing_key(self) -> bytes:
        if self.signing_key is None or not self.signing_key.get_secret_value():
            raise ConfigError("TOKENTRAIL_SIGNING_KEY is not set: set it to a shared secret (the demo sets its own)")
        return self.signing_key.get_secret_value().encode()


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **overrides: Any) -> S:
    """Build a settings object, turning pydantic's errors into one ConfigError naming every field."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = [f"{prefix}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
