"""The `reads` table behind the Customers dashboard's silent churn: `events` and `report`
record who read which tenant's data; a store that refuses writes loses the read, loudly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tokentrail.cli import main
from tokentrail.storage.errors import StorageError
from tokentrail.storage.reads import reader_name, record_read


def test_events_and_report_cost_record_who_read_which_tenant(store, storage_env, monkeypatch, capsys):
    for name, value in storage_env.items():
        monkeypatch.setenv(name, value)
    assert main(["events", "--tenant", "acme", "--since", "2026-03-01", "--until", "2026-03-02"]) == 0
    assert main(["report", "cost", "--by", "root", "--since", "2026-03-01T10:00Z"]) == 0
    assert capsys.readouterr().err == ""
    rows = store.query("SELECT tenant_id, reader, surface, since, until FROM reads ORDER BY read_at")
    assert rows == [
        {
            "tenant_id": "acme",
            "reader": reader_name(),
            "surface": "events",
            "since": datetime(2026, 3, 1, tzinfo=UTC),
            "until": datetime(2026, 3, 2, tzinfo=UTC),
        },
        {
            "tenant_id": "",
            "reader": reader_name(),
            "surface": "report cost",
            "since": datetime(2026, 3, 1, 10, tzinfo=UTC),
            "until": None,
        },
    ]


class ReadOnlyStore:
    def insert_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> None:
        raise StorageError(f"cannot insert into {table}: read-only (process 4242 holds the store)")


def test_a_store_that_refuses_writes_loses_the_read_and_says_so(capsys):
    assert record_read(ReadOnlyStore(), "events", "acme", None, None) is False  # type: ignore[arg-type]
    assert capsys.readouterr().err == (
        "tokentrail: this read was not recorded (cannot insert into reads: read-only (process 4242 holds the store))\n"
    )
