"""Settings every process reads (DESIGN section 6), one pydantic-settings class per concern.

Process-specific settings (gateway, flows, storage) live beside their code and reuse
`ENV` below. A CLI flag, where there is one, wins over the environment.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.signing import MIN_KEY_LENGTH, KeySet

ENV = SettingsConfigDict(env_prefix="TOKENTRAIL_", extra="ignore", env_file=None, use_attribute_docstrings=True)
"""Shared by every settings class; field docstrings become descriptions (the README table)."""
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class ConfigError(Exception):
    """Configuration the process cannot start with; the message lists every problem at once."""


def broker_state_file(home: Path) -> Path:
    """Where `tokentrail kafka up` records the broker it started: {"bootstrap", "pid", "port", ...}."""
    return home / "kafka" / "broker.json"


class CoreSettings(BaseSettings):
    model_config = ENV

    home: Path = Field(default=Path("./.tokentrail"))
    """TOKENTRAIL_HOME: state directory (broker data and pid, embedded ClickHouse, spool, logs)."""

    kafka_bootstrap: str | None = None
    """TOKENTRAIL_KAFKA_BOOTSTRAP: Kafka bootstrap servers; unset means the broker
    `tokentrail kafka up` started in TOKENTRAIL_HOME, else 127.0.0.1:9092."""

    signing_key: SecretStr | None = None
    """TOKENTRAIL_SIGNING_KEY: HMAC-SHA256 key for RawCall signatures, at least 32 characters.
    Required by the gateway and the flows; never printed."""

    signing_keys_previous: SecretStr | None = None
    """TOKENTRAIL_SIGNING_KEYS_PREVIOUS: comma-separated signing keys still accepted when
    verifying (a rotation: records signed before the switch stay valid); never used to sign."""

    operator_key: SecretStr | None = None
    """TOKENTRAIL_OPERATOR_KEY: HMAC-SHA256 key that signs identity and control records (keys,
    freezes, limits, capture), at least 32 characters and distinct from TOKENTRAIL_SIGNING_KEY.
    Required by the gateway, the flows and the control commands; records without a good
    operator signature are refused."""

    operator_keys_previous: SecretStr | None = None
    """TOKENTRAIL_OPERATOR_KEYS_PREVIOUS: comma-separated operator keys still accepted when
    verifying identity and control records (rotation); never used to sign."""

    topic_prefix: str = ""
    """TOKENTRAIL_TOPIC_PREFIX: prepended to every topic name (tests, shared clusters)."""

    def bootstrap(self) -> str:
        """The bootstrap servers to use, following the precedence in the docstring above."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        state = broker_state_file(self.home)
        if state.exists():
            try:
                return orjson.loads(state.read_bytes())["bootstrap"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
        return DEFAULT_BOOTSTRAP

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def require_signing_key(self) -> bytes:
        """The current RawCall signing key; ConfigError if missing or too short."""
        return self.signing_keys().current

    def signing_keys(self) -> KeySet:
        """RawCall keys: the current one signs, it and the previous ones verify."""
        return _key_set("TOKENTRAIL_SIGNING_KEY", self.signing_key, self.signing_keys_previous)

    def operator_keys(self) -> KeySet:
        """Identity and control record keys; ConfigError if missing, too short, or the RawCall key."""
        keys = _key_set("TOKENTRAIL_OPERATOR_KEY", self.operator_key, self.operator_keys_previous)
        if self.signing_key is not None and self.signing_key.get_secret_value().encode() == keys.current:
            raise ConfigError("TOKENTRAIL_OPERATOR_KEY must differ from TOKENTRAIL_SIGNING_KEY")
        return keys


def _key_set(variable: str, current: SecretStr | None, previous: SecretStr | None) -> KeySet:
    if current is None or not current.get_secret_value():
        raise ConfigError(f"{variable} is not set: set it to a shared secret (the demo sets its own)")
    keys = [current.get_secret_value()]
    if previous is not None:
        keys += [key.strip() for key in previous.get_secret_value().split(",") if key.strip()]
    for position, key in enumerate(keys):
        if len(key) < MIN_KEY_LENGTH:
            name = variable if position == 0 else f"{variable.replace('_KEY', '_KEYS')}_PREVIOUS (key {position})"
            raise ConfigError(f"{name} is too short: {len(key)} characters, at least {MIN_KEY_LENGTH} are needed")
    return KeySet(keys[0].encode(), [key.encode() for key in keys[1:]])


def load(cls: type[BaseSettings], **overrides) -> BaseSettings:
    """Build a settings object, turning pydantic's errors into one ConfigError naming every field."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = [f"{prefix}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
