"""`migrate` on the real embedded engine: order, idempotence, recovery, checksums, retention."""

import shutil
from pathlib import Path

import pytest

from tokentrail.storage import StorageError, StorageSettings, migrate
from tokentrail.storage.embedded import EmbeddedStore
from tokentrail.storage.migrations import apply_retention, load_migrations
from tokentrail.storage.settings import REPO_MIGRATIONS


@pytest.fixture
def empty_store(clickhouse_path):
    opened = EmbeddedStore(clickhouse_path)
    yield opened
    opened.close()


@pytest.fixture
def migrations_copy(tmp_path) -> Path:
    copy = tmp_path / "migrations"
    shutil.copytree(REPO_MIGRATIONS, copy)
    return copy


def recorded(store) -> list[str]:
    return [r["name"] for r in store.query("SELECT name FROM schema_migrations ORDER BY applied_at, name")]


def test_applies_every_file_in_number_order_then_nothing(empty_store, storage_settings):
    names = [m.name for m in load_migrations(REPO_MIGRATIONS)]
    assert names == sorted(names) and names[0].startswith("0001_")
    assert migrate(empty_store, storage_settings) == names
    assert recorded(empty_store) == names
    assert migrate(empty_store, storage_settings) == []
    assert recorded(empty_store) == names
    tables = {r["name"] for r in empty_store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")}
    assert {
        "llm_calls",
        "events",
        "cost_by_tenant_1m",
        "cost_by_model_1h",
        "incidents_by_error_1m",
        "policy_decisions_1m",
        "cost_by_root_1h_mv",
    } <= tables


def test_a_half_applied_migration_reruns_cleanly(empty_store, migrations_copy, tmp_path):
    settings = StorageSettings(home=tmp_path, migrations_dir=migrations_copy)
    target = migrations_copy / "0003_create_cost_by_tenant.sql"
    good = target.read_text()
    target.write_text(good + "\nSELECT no_such_function();\n")
    with pytest.raises(StorageError, match="migration 0003_create_cost_by_tenant.sql failed"):
        migrate(empty_store, settings)
    assert recorded(empty_store) == ["0001_create_llm_calls.sql", "0002_create_events.sql"]

    target.write_text(good)  # fixed: its first statements already ran, IF NOT EXISTS makes that fine
    applied = migrate(empty_store, settings)
    assert applied[0] == "0003_create_cost_by_tenant.sql"
    assert "0003_create_cost_by_tenant.sql" in recorded(empty_store)


def test_a_file_changed_after_being_applied_is_a_checksum_mismatch(empty_store, migrations_copy, tmp_path):
    settings = StorageSettings(home=tmp_path, migrations_dir=migrations_copy)
    migrate(empty_store, settings)
    (migrations_copy / "0002_create_events.sql").write_text(
        (migrations_copy / "0002_create_events.sql").read_text() + "\n-- edited\n"
    )
    (migrations_copy / "0099_create_later.sql").write_text(
        "CREATE TABLE IF NOT EXISTS later (x UInt8) ENGINE = Memory;"
    )
    with pytest.raises(StorageError, match=r"checksum mismatch.*0002_create_events\.sql"):
        migrate(empty_store, settings)
    assert "0099_create_later.sql" not in recorded(empty_store), "nothing runs after a mismatch"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["0001_a.sql", "0001_b.sql"], "share a number"),
        (["1_create_x.sql"], "must look like NNNN_verb_object.sql"),
    ],
)
def test_bad_migration_names_are_refused(tmp_path, files, message):
    for name in files:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(StorageError, match=message):
        load_migrations(tmp_path)


def test_down_files_exist_for_every_migration_and_are_ignored_by_migrate():
    ups = sorted(p.name for p in REPO_MIGRATIONS.glob("*.sql") if not p.name.endswith(".down.sql"))
    downs = sorted(p.name.replace(".down.sql", ".sql") for p in REPO_MIGRATIONS.glob("*.down.sql"))
    assert downs == ups
    assert [m.name for m in load_migrations(REPO_MIGRATIONS)] == ups


def test_every_statement_is_idempotent_and_every_merge_tree_has_the_dedup_window():
    from tokentrail.storage.sqltext import split_statements

    for migration in load_migrations(REPO_MIGRATIONS):
        for statement in split_statements(migration.sql):
            code = "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--"))
            assert "IF NOT EXISTS" in code, f"{migration.name}: {code[:60]}"
            if "MergeTree" in code:
                assert "non_replicated_deduplication_window" in code, migration.name


def test_down_migrations_remove_what_up_created(store):
    for down in sorted(REPO_MIGRATIONS.glob("*.down.sql"), reverse=True):
        from tokentrail.storage.sqltext import split_statements

        for statement in split_statements(down.read_text()):
            store.command(statement)
    left = store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    assert [r["name"] for r in left] == ["schema_migrations"]


def ttl_of(store) -> dict[str, str]:
    rows = store.query(
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() AND partition_key != ''"
    )
    return {r["name"]: r["engine_full"].split(" TTL ", 1)[1].split(" SETTINGS ")[0] for r in rows}


def test_retention_ttl_comes_from_settings_and_follows_a_change(empty_store, tmp_path):
    migrate(empty_store, StorageSettings(home=tmp_path, retention_days=30))
    ttls = ttl_of(empty_store)
    assert ttls["llm_calls"] == "toDateTime(timestamp) + toIntervalDay(30)"
    assert ttls["cost_by_tenant_1h"] == "toDateTime(hour) + toIntervalDay(30)"
    assert set(ttls) >= {"events", "incidents_by_error_1m", "policy_decisions_1m"}
    assert all(ttl.endswith("toIntervalDay(30)") for ttl in ttls.values())

    migrate(empty_store, StorageSettings(home=tmp_path, retention_days=90))
    assert all(ttl.endswith("toIntervalDay(90)") for ttl in ttl_of(empty_store).values())
    assert apply_retention(empty_store, 90) == []


@pytest.mark.parametrize("days", [0, -1, "30; DROP TABLE events", 30.5, True])
def test_retention_accepts_only_a_whole_number_of_days(store, days):
    with pytest.raises(StorageError, match="whole number of days"):
        apply_retention(store, days)


def test_retention_setting_is_validated(monkeypatch):
    from tokentrail.settings import ConfigError, load

    monkeypatch.setenv("TOKENTRAIL_RETENTION_DAYS", "forever")
    with pytest.raises(ConfigError, match="TOKENTRAIL_RETENTION_DAYS"):
        load(StorageSettings)
