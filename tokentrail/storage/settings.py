"""Storage settings: where ClickHouse is and how long rows are kept."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from tokentrail.settings import ENV, absolute_home, default_home

REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "clickhouse"


class StorageSettings(BaseSettings):
    model_config = ENV

    home: Path = Field(default_factory=default_home)
    """TOKENTRAIL_HOME: state directory; the embedded ClickHouse lives in its `clickhouse/`."""

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        return absolute_home(home)

    clickhouse_url: SecretStr | None = None
    """TOKENTRAIL_CLICKHOUSE_URL: ClickHouse server, e.g. http://user:pass@host:8123/db; unset
    means the embedded engine (chdb) at TOKENTRAIL_HOME/clickhouse. Secret: it may carry a password."""

    clickhouse_database: str = "default"
    """TOKENTRAIL_CLICKHOUSE_DATABASE: database of the embedded engine, and of the server when
    its URL names none."""

    retention_days: int = Field(default=400, ge=1, le=36500)
    """TOKENTRAIL_RETENTION_DAYS: rows (base tables and rollups) older than this many days are
    dropped by ClickHouse's TTL; `tokentrail migrate` applies a change."""

    migrations_dir: Path = REPO_MIGRATIONS
    """TOKENTRAIL_MIGRATIONS_DIR: the numbered SQL files `tokentrail migrate` applies."""

    @field_validator("clickhouse_database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value):
            raise ValueError("must be a plain identifier (letters, digits, _)")
        return value

    def embedded_path(self) -> Path:
        return self.home / "clickhouse"
