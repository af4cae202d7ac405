"""`migrate`: apply the numbered SQL files of `clickhouse/` in order, once each.

Each file `NNNN_verb_object.sql` holds idempotent statements (`IF NOT EXISTS`), so a file that
failed half-way simply runs again. An applied file is recorded in `schema_migrations` with its
SHA-256; if it changes afterwards, migrate refuses to run (write a new file instead). After the
files, the retention TTL of every month-partitioned table is set from TOKENTRAIL_RETENTION_DAYS.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tokentrail.storage.base import Store
from tokentrail.storage.errors import StorageError
from tokentrail.storage.settings import StorageSettings
from tokentrail.storage.sqltext import identifier, split_statements

MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# Not a migration itself: it has to exist before the first one is recorded.
SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY name
"""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str
    checksum: str


def load_migrations(directory: Path) -> list[Migration]:
    """The up-migrations of `directory`, in number order; a malformed name or a shared number
    is an error, because running such files in an unspecified order is how schemas drift."""
    if not directory.is_dir():
        raise StorageError(f"migrations directory not found: {directory}")
    migrations: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        if path.name.endswith(".down.sql"):
            continue
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise StorageError(f"migration file name must look like NNNN_verb_object.sql: {path.name}")
        if match.group(1) in numbers:
            raise StorageError(f"migrations {numbers[match.group(1)]} and {path.name} share a number")
        numbers[match.group(1)] = path.name
        raw = path.read_bytes()
        migrations.append(Migration(path.name, raw.decode(), hashlib.sha256(raw).hexdigest()))
    return migrations


def migrate(store: Store, settings: StorageSettings | None = None) -> list[str]:
    """Apply pending migrations in order and the retention TTL; return the names applied."""
    settings = settings or StorageSettings()
    migrations = load_migrations(settings.migrations_dir)
    store.command(SCHEMA_MIGRATIONS_DDL)
    applied = {row["name"]: row["checksum"] for row in store.query("SELECT name, checksum FROM schema_migrations")}
    changed = [m.name for m in migrations if m.name in applied and applied[m.name] != m.checksum]
    if changed:
        raise StorageError(
            "checksum mismatch: migration(s) changed after being applied: "
            + ", ".join(changed)
            + " (restore the applied version and add a new numbered file instead)"
        )
    done = []
    for migration in migrations:
        if migration.name in applied:
            continue
        for statement in split_statements(migration.sql):
            try:
                store.command(statement)
            except StorageError as exc:
                raise StorageError(f"migration {migration.name} failed: {exc}") from None
        store.insert_rows(
            "schema_migrations",
            [{"name": migration.name, "checksum": migration.checksum, "applied_at": datetime.now(UTC)}],
        )
        done.append(migration.name)
    apply_retention(store, settings.retention_days)
    return done


def apply_retention(store: Store, days: int) -> list[str]:
    """Set `TTL toDateTime(<month column>) + INTERVAL days DAY` on every table partitioned by
    toYYYYMM(<column>) whose TTL differs; return the tables changed.

    Existing parts are not rewritten at once (materialize_ttl_after_modify = 0): ClickHouse
    drops expired rows in its TTL merges, so migrate stays fast on a big table.
    """
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 36500:
        raise StorageError(f"retention must be a whole number of days in 1..36500, got {days!r}")
    tables = store.query(
        "SELECT name, partition_key, engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND partition_key LIKE 'toYYYYMM(%)'"
    )
    changed = []
    for table in tables:
        column = re.fullmatch(r"toYYYYMM\((\w+)\)", table["partition_key"])
        if column is None:
            continue
        wanted = f"TTL toDateTime({column.group(1)}) + toIntervalDay({days})"
        if wanted in table["engine_full"]:
            continue
        store.command(
            f"ALTER TABLE {identifier(table['name'])} MODIFY TTL "
            f"toDateTime({identifier(column.group(1))}) + INTERVAL {int(days)} DAY "
            "SETTINGS materialize_ttl_after_modify = 0"
        )
        changed.append(table["name"])
    return changed
