"""Settings every process reads (docs/architecture.md), one pydantic-settings class per concern.

Process-specific settings (gateway, flows, storage) live beside their code and reuse
`ENV` below. A CLI flag, where there is one, wins over the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokentrail.errors import ConfigError

__all__ = ["ENV", "ConfigError", "CoreSettings", "load"]

MIN_KEY_LENGTH = 32
"""Shortest signing or operator key accepted (characters): 32 random characters are past guessing."""
KeyMaterial = tuple[bytes, list[bytes]]
"""(current key, previous keys): what `schemas.signing.KeySet` is built from."""

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

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """TOKENTRAIL_KAFKA_SECURITY_PROTOCOL: how every Kafka client (gateway, flows, control
    commands, `kafka up`'s admin) connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL."""

    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-256"
    """TOKENTRAIL_KAFKA_SASL_MECHANISM: SASL mechanism when the protocol is SASL_*."""

    kafka_sasl_username: str | None = None
    """TOKENTRAIL_KAFKA_SASL_USERNAME: SASL user (required with SASL_*)."""

    kafka_sasl_password: SecretStr | None = None
    """TOKENTRAIL_KAFKA_SASL_PASSWORD: SASL password (required with SASL_*); never printed."""

    kafka_ssl_ca_location: Path | None = None
    """TOKENTRAIL_KAFKA_SSL_CA_LOCATION: PEM file of the CA that signed the brokers' certificates
    (SSL / SASL_SSL); unset means the system's trust store."""

    kafka_properties_file: Path | None = None
    """TOKENTRAIL_KAFKA_PROPERTIES_FILE: a librdkafka properties file (`name=value` lines, `#`
    comments) for anything else (client certificates, OAUTHBEARER...); the settings above win."""

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
                return str(orjson.loads(state.read_bytes())["bootstrap"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
        return DEFAULT_BOOTSTRAP

    def kafka_client_config(self) -> dict[str, str]:
        """The librdkafka configuration every Kafka client of tokentrail starts from: bootstrap
        servers and security (TLS/SASL). Raises ConfigError (one line) on an incomplete setup."""
        config = _read_properties(self.kafka_properties_file) if self.kafka_properties_file else {}
        config["bootstrap.servers"] = self.bootstrap()
        protocol = self.kafka_security_protocol
        if protocol != "PLAINTEXT" or "security.protocol" not in config:
            config["security.protocol"] = protocol
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ConfigError(
                    f"TOKENTRAIL_KAFKA_SECURITY_PROTOCOL={protocol} needs TOKENTRAIL_KAFKA_SASL_USERNAME "
                    "and TOKENTRAIL_KAFKA_SASL_PASSWORD"
                )
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location is not None:
            if not self.kafka_ssl_ca_location.is_file():
                raise ConfigError(f"TOKENTRAIL_KAFKA_SSL_CA_LOCATION: no such file: {self.kafka_ssl_ca_location}")
            config["ssl.ca.location"] = str(self.kafka_ssl_ca_location)
        return config

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def require_signing_key(self) -> bytes:
        """The current RawCall signing key; ConfigError if missing or too short."""
        return self.signing_keys()[0]

    def signing_keys(self) -> KeyMaterial:
        """RawCall keys (`schemas.signing.KeySet(*...)`): the current one signs, it and the
        previous ones verify."""
        return _key_material("TOKENTRAIL_SIGNING_KEY", self.signing_key, self.signing_keys_previous)

    def operator_keys(self) -> KeyMaterial:
        """Identity and control record keys; ConfigError if missing, too short, or the RawCall key."""
        keys = _key_material("TOKENTRAIL_OPERATOR_KEY", self.operator_key, self.operator_keys_previous)
        if self.signing_key is not None and self.signing_key.get_secret_value().encode() == keys[0]:
            raise ConfigError("TOKENTRAIL_OPERATOR_KEY must differ from TOKENTRAIL_SIGNING_KEY")
        return keys


def _read_properties(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"TOKENTRAIL_KAFKA_PROPERTIES_FILE: cannot read {path}: {exc}") from None
    properties = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, value = line.partition("=")
        if not separator or not name.strip():
            raise ConfigError(f"TOKENTRAIL_KAFKA_PROPERTIES_FILE: {path}:{number}: expected name=value")
        properties[name.strip()] = value.strip()
    return properties


def _key_material(variable: str, current: SecretStr | None, previous: SecretStr | None) -> KeyMaterial:
    if current is None or not current.get_secret_value():
        raise ConfigError(f"{variable} is not set: set it to a shared secret (the demo sets its own)")
    keys = [current.get_secret_value()]
    if previous is not None:
        keys += [key.strip() for key in previous.get_secret_value().split(",") if key.strip()]
    for position, key in enumerate(keys):
        if len(key) < MIN_KEY_LENGTH:
            name = variable if position == 0 else f"{variable.replace('_KEY', '_KEYS')}_PREVIOUS (key {position})"
            raise ConfigError(f"{name} is too short: {len(key)} characters, at least {MIN_KEY_LENGTH} are needed")
    return keys[0].encode(), [key.encode() for key in keys[1:]]


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **overrides: Any) -> S:
    """Build a settings object, turning pydantic's errors into one ConfigError naming every field."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = [f"{prefix}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
