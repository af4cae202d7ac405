"""The Store contract, run against both adapters: the embedded engine (always) and a
ClickHouse server when TOKENTRAIL_TEST_CLICKHOUSE_URL is set (none can be installed on the
build machines, so that variant is skipped there; see docs/storage.md)."""

import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlparse, urlunparse

import pytest

from tests.fixtures.clickhouse import call_row, event_row
from tokentrail.storage import StorageError, StorageSettings, migrate
from tokentrail.storage.base import encode_rows
from tokentrail.storage.event_rows import EVENT_COLUMNS, unified_event
from tokentrail.storage.event_rows import event_row as event_row_of

ROLLUPS = [
    "cost_by_tenant_1m",
    "cost_by_tenant_1h",
    "cost_by_identity_1m",
    "cost_by_identity_1h",
    "cost_by_root_1m",
    "cost_by_root_1h",
    "cost_by_model_1m",
    "cost_by_model_1h",
]


@pytest.fixture(params=["embedded", "server"])
def any_store(request, tmp_path):
    """A migrated store of each adapter; the server variant gets a database of its own."""
    if request.param == "embedded":
        yield request.getfixturevalue("store")
        return
    url = os.environ.get("TOKENTRAIL_TEST_CLICKHOUSE_URL")
    if not url:
        pytest.skip("no ClickHouse server: set TOKENTRAIL_TEST_CLICKHOUSE_URL")
    from tokentrail.storage.server_store import ServerStore

    database = f"tokentrail_test_{uuid.uuid4().hex[:8]}"
    admin = ServerStore(url)
    admin.command(f"CREATE DATABASE {database}")
    server = ServerStore(urlunparse(urlparse(url)._replace(path=f"/{database}")))
    try:
        migrate(server, StorageSettings(home=tmp_path))
        yield server
    finally:
        server.close()
        admin.command(f"DROP DATABASE IF EXISTS {database}")
        admin.close()


def totals(store) -> dict:
    """Calls and cost in the base table and in every rollup."""
    found = {
        "llm_calls": store.query(
            "SELECT count() AS calls, sum(ifNull(cost_usd, 0)) AS cost, countIf(unpriced) AS unpriced FROM llm_calls"
        )[0]
    }
    for table in ROLLUPS:
        found[table] = store.query(
            f"SELECT sum(calls) AS calls, sum(cost_usd) AS cost, sum(unpriced_calls) AS unpriced FROM {table}"
        )[0]
    found["incidents"] = store.query("SELECT sum(calls) AS calls FROM incidents_by_error_1m")[0]["calls"]
    return found


def test_migrate_is_idempotent(any_store, tmp_path):
    assert migrate(any_store, StorageSettings(home=tmp_path)) == []


def test_a_repeated_insert_with_the_same_token_leaves_base_table_and_rollups_unchanged(any_store):
    rows = [
        call_row(cost_usd=Decimal("0.5")),
        call_row(status=500, failed=True, error_type="server_error"),
        call_row(cost_usd=None, input_cost_usd=None, output_cost_usd=None, unpriced=True),
    ]
    any_store.insert_rows("llm_calls", rows, dedup_token="batch-1")
    first = totals(any_store)
    assert first["llm_calls"]["calls"] == 3 and first["incidents"] == 1
    assert all(first[t]["calls"] == 3 for t in ROLLUPS)

    any_store.insert_rows("llm_calls", rows, dedup_token="batch-1")
    assert totals(any_store) == first

    any_store.insert_rows("llm_calls", rows, dedup_token="batch-2")  # a different token is a new insert
    assert totals(any_store)["cost_by_tenant_1m"]["calls"] == 6


def test_a_pre_encoded_insert_is_the_same_insert(any_store):
    """The flows journal the encoded body and re-send it with `insert_json_lines`."""
    rows = [call_row(cost_usd=Decimal("0.5")), call_row(cost_usd=Decimal("0.25"))]
    any_store.insert_rows("llm_calls", rows, dedup_token="batch-1")
    any_store.insert_json_lines("llm_calls", encode_rows("llm_calls", rows), dedup_token="batch-1")
    assert totals(any_store)["llm_calls"] == {"calls": 2, "cost": Decimal("0.75"), "unpriced": 0}
    any_store.insert_json_lines("llm_calls", encode_rows("llm_calls", rows[:1]), dedup_token="batch-2")
    assert totals(any_store)["cost_by_tenant_1m"]["calls"] == 3
    with pytest.raises(StorageError, match="insert of 1 rows into llm_calls failed"):
        any_store.insert_json_lines("llm_calls", b'{"call_id": "x", "typo": 1}\n')


def test_events_dedup_and_policy_rollup(any_store):
    rows = [
        event_row(event_type="protection_decision", event_source="gateway", payload='{"reason": "frozen"}'),
        event_row(event_type="llm_call"),
    ]
    for _ in range(2):
        any_store.insert_rows("events", rows, dedup_token="events-1")
    assert any_store.query("SELECT count() AS n FROM events") == [{"n": 2}]
    assert any_store.query("SELECT reason, sum(events) AS n FROM policy_decisions_1m GROUP BY reason") == [
        {"reason": "frozen", "n": 1}
    ]


def test_the_events_row_contract_is_the_table_and_round_trips_a_unified_event(any_store):
    """`event_rows` is the one mapping of `events`: its columns are the table's, and an event
    written through it reads back as the same event."""
    columns = [row["name"] for row in any_store.query("DESCRIBE TABLE events")]
    assert tuple(columns) == EVENT_COLUMNS
    event = {
        "event_id": "e-round-trip",
        "event_type": "protection_decision",
        "event_source": "gateway",
        "tenant_id": "acme",
        "timestamp": "2026-11-28T12:00:00.123Z",
        "severity": "WARN",
        "actor": {"type": "human", "id": "bob"},
        "context": {"request_id": "r-1", "trace_id": None},
        "payload": {"decision": "frozen", "tokens": [1, 2]},
    }
    any_store.insert_rows("events", [event_row_of(event)])
    (row,) = any_store.query(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events")
    assert unified_event(row) == event


def test_every_adapter_implements_the_whole_store_protocol():
    """Static typing checks the signatures (mypy); this checks no adapter lacks a method."""
    from tokentrail.storage import LockedStore, Store
    from tokentrail.storage.embedded import EmbeddedStore
    from tokentrail.storage.query_server import RemoteStore
    from tokentrail.storage.server_store import ServerStore

    methods = {name for name in vars(Store) if not name.startswith("_")}
    assert methods == {"insert_rows", "insert_json_lines", "query", "command", "existing_ids", "close"}
    for adapter in (EmbeddedStore, ServerStore, RemoteStore, LockedStore):
        assert methods <= set(dir(adapter)), adapter


def test_unpriced_cost_stays_null_and_rollups_count_it_apart(any_store):
    any_store.insert_rows(
        "llm_calls",
        [
            call_row(
                call_id="priced",
                cost_usd=Decimal("0.0012345678"),
                input_cost_usd=Decimal("0.001"),
                output_cost_usd="0.0002345678",
            ),
            call_row(call_id="unpriced", cost_usd=None, input_cost_usd=None, output_cost_usd=None, unpriced=True),
        ],
    )
    base = {r["call_id"]: r for r in any_store.query("SELECT call_id, cost_usd, output_cost_usd FROM llm_calls")}
    assert base["unpriced"]["cost_usd"] is None
    assert base["priced"]["cost_usd"] == Decimal("0.0012345678")
    assert base["priced"]["output_cost_usd"] == Decimal("0.0002345678")
    rollup = any_store.query(
        "SELECT sum(calls) AS calls, sum(cost_usd) AS cost, sum(unpriced_calls) AS unpriced FROM cost_by_tenant_1h"
    )
    assert rollup == [{"calls": 2, "cost": Decimal("0.0012345678"), "unpriced": 1}]


def test_existing_ids(any_store):
    any_store.insert_rows("llm_calls", [call_row(call_id="a"), call_row(call_id="b")])
    assert any_store.existing_ids("llm_calls", "call_id", ["a", "c", "b", "'; DROP TABLE llm_calls; --"]) == {"a", "b"}
    assert any_store.existing_ids("llm_calls", "call_id", []) == set()
    with pytest.raises(StorageError, match="not a valid table or column name"):
        any_store.existing_ids("llm_calls; DROP TABLE events", "call_id", ["a"])


def test_values_come_back_typed(any_store):
    any_store.insert_rows(
        "llm_calls",
        [
            call_row(
                call_id="typed",
                timestamp=datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=UTC),
                chain_key_ids=["k1", "k2"],
                ttft_ms=12.5,
                input_tokens=2**40,
            )
        ],
    )
    row = any_store.query(
        "SELECT timestamp, chain_key_ids, ttft_ms, input_tokens, stream, status FROM llm_calls "
        "WHERE call_id = {id:String}",
        {"id": "typed"},
    )[0]
    assert row == {
        "timestamp": datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=UTC),
        "chain_key_ids": ["k1", "k2"],
        "ttft_ms": 12.5,
        "input_tokens": 2**40,
        "stream": False,
        "status": 200,
    }
    assert row["timestamp"].utcoffset().total_seconds() == 0


def test_a_bad_row_fails_the_whole_insert_with_a_clear_error(any_store):
    rows = [call_row(), call_row(status="not a number"), call_row()]
    with pytest.raises(StorageError, match=r"insert of 3 rows into llm_calls failed: .*status"):
        any_store.insert_rows("llm_calls", rows)
    with pytest.raises(StorageError, match=r"into llm_calls failed: .*Unknown field.*typo"):
        any_store.insert_rows("llm_calls", [call_row(typo=1)])
    assert totals(any_store)["llm_calls"]["calls"] == 0
    assert totals(any_store)["cost_by_tenant_1m"]["calls"] == 0


def test_query_errors_are_storage_errors(any_store):
    with pytest.raises(StorageError, match="query failed: .*no_such_table"):
        any_store.query("SELECT * FROM no_such_table")
