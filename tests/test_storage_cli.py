"""`tokentrail events` and `tokentrail report cost`, run in-process on a seeded embedded store."""

from decimal import Decimal

import orjson
import pytest

from schemas.models import UnifiedEvent
from tests.fixtures.clickhouse import call_row, cli_runner, event_row


@pytest.fixture
def cli(store, storage_env, monkeypatch, capsys):
    """Run `tokentrail ...` against `store`; returns (exit code, stdout, stderr)."""
    return cli_runner(storage_env, monkeypatch, capsys)


@pytest.fixture
def seeded_events(store):
    payload = orjson.dumps({"call_id": "c1", "tokens": {"input": 3}, "cost_usd": "0.1"}).decode()
    store.insert_rows(
        "events",
        [
            event_row(event_id="b", timestamp="2026-03-01 10:00:01.000", payload=payload, trace_id="t-1"),
            event_row(
                event_id="a", timestamp="2026-03-01 10:00:01.000", event_type="llm_call_failed", severity="ERROR"
            ),
            event_row(event_id="c", timestamp="2026-03-01 09:59:59.999"),
            event_row(
                event_id="d",
                timestamp="2026-03-01 10:00:00.000",
                event_type="protection_decision",
                event_source="gateway",
                request_id="",
            ),
            event_row(event_id="e", timestamp="2026-03-01 11:00:00.000"),  # == --until: excluded
            event_row(event_id="f", timestamp="2026-03-01 10:30:00.000", tenant_id="other"),
        ],
    )


WINDOW = ("--tenant", "acme", "--since", "2026-03-01T10:00:00Z", "--until", "2026-03-01T11:00:00Z")


def test_events_jsonl_is_unified_events_in_timestamp_event_id_order(cli, seeded_events):
    code, out, err = cli("events", *WINDOW, "--format", "jsonl")
    assert code == 0, err
    lines = out.splitlines()
    events = [UnifiedEvent.model_validate_json(line) for line in lines]
    assert [e.event_id for e in events] == ["d", "a", "b"]
    first, _, last = (orjson.loads(line) for line in lines)
    assert last["timestamp"] == "2026-03-01T10:00:01.000Z"
    assert last["payload"] == {"call_id": "c1", "tokens": {"input": 3}, "cost_usd": "0.1"}
    assert last["context"] == {"request_id": "req-1", "trace_id": "t-1"}
    assert last["actor"] == {"type": "agent", "id": "support-bot"}
    assert first["context"] == {"request_id": None, "trace_id": None}
    assert orjson.loads(events[0].model_dump_json()) == first


def test_events_filters_by_type_and_source_and_limit(cli, seeded_events):
    code, out, _ = cli("events", *WINDOW, "--type", "llm_call", "--type", "llm_call_failed", "--format", "jsonl")
    assert [orjson.loads(line)["event_id"] for line in out.splitlines()] == ["a", "b"]
    code, out, _ = cli("events", *WINDOW, "--source", "gateway", "--format", "jsonl")
    assert [orjson.loads(line)["event_id"] for line in out.splitlines()] == ["d"]
    code, out, err = cli("events", *WINDOW, "--limit", "1", "--format", "jsonl")
    assert len(out.splitlines()) == 1 and "--limit 1" in err


def test_events_table_is_fixed_width_in_the_same_order(cli, seeded_events):
    code, out, _ = cli("events", *WINDOW)
    assert code == 0
    header, rule, *rows = out.splitlines()
    assert header.split() == [
        "timestamp",
        "type",
        "severity",
        "source",
        "actor",
        "model",
        "status",
        "cost_usd",
        "details",
    ]
    assert [row.split()[1] for row in rows] == ["protection_decision", "llm_call_failed", "llm_call"]
    assert {row.index("INFO") if "INFO" in row else row.index("ERROR") for row in rows} == {header.index("severity")}


def test_events_table_shows_model_status_and_cost_however_long_the_payload(cli, store):
    """The key fields come out of the payload whole, not cut at a fixed width."""
    long_chain = [{"key_id": f"key-{i:04d}", "actor": {"type": "agent", "id": f"a{i}"}} for i in range(20)]
    priced = {
        "model": "gpt-4o-2024-08-06",
        "status": 200,
        "cost_usd": "0.0012345",
        "tokens": {"input": 12, "output": 3},
    }
    unpriced = {"requested_model": "my-finetune", "model": None, "status": 429, "unpriced": True}
    unpriced.update(error_type="rate_limit_error", unpriced_reason="no usage reported")
    store.insert_rows(
        "events",
        [
            event_row(
                event_id="p",
                timestamp="2026-03-01 10:00:01.000",
                payload=orjson.dumps({"chain": long_chain, **priced}).decode(),
            ),
            event_row(event_id="u", timestamp="2026-03-01 10:00:02.000", payload=orjson.dumps(unpriced).decode()),
        ],
    )
    code, out, _ = cli("events", *WINDOW)
    assert code == 0
    header, _, first, second = out.splitlines()
    cells = dict(zip(header.split()[:8], first.split()[:8], strict=True))
    assert (cells["model"], cells["status"], cells["cost_usd"]) == ("gpt-4o-2024-08-06", "200", "0.0012345")
    assert "tokens=12/3" in first
    cells = dict(zip(header.split()[:8], second.split()[:8], strict=True))
    assert (cells["model"], cells["status"], cells["cost_usd"]) == ("my-finetune", "429", "unpriced")
    assert "unpriced_reason=no usage reported" in second


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday", "--until", "2026-03-02"), "--since: not an ISO 8601 timestamp: 'yesterday'"),
        (("--since", "2026-03-02", "--until", "2026-13-01"), "--until: not an ISO 8601 timestamp"),
        (("--since", "2026-03-02", "--until", "2026-03-01"), "is after --until"),
        (("--since", "2026-03-01", "--until", "2026-03-02", "--type", "llm_cal"), "unknown --type 'llm_cal'"),
        (("--since", "2026-03-01", "--until", "2026-03-02", "--source", "kafka"), "unknown --source 'kafka'"),
    ],
)
def test_events_bad_arguments_are_one_line_exit_2(cli, args, message):
    code, out, err = cli("events", "--tenant", "acme", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("tokentrail events: ") and message in err


@pytest.fixture
def seeded_calls(store):
    store.insert_rows(
        "llm_calls",
        [
            call_row(
                tenant_id="acme",
                key_id="k1",
                actor_id="bot-1",
                cost_usd=Decimal("1.25"),
                input_tokens=10,
                timestamp="2026-03-01 10:05:00.000",
            ),
            call_row(
                tenant_id="acme",
                key_id="k2",
                actor_id="bot-2",
                cost_usd=Decimal("0.5"),
                model="gpt-4o-mini",
                timestamp="2026-03-01 10:59:59.999",
            ),
            call_row(
                tenant_id="acme",
                key_id="k2",
                actor_id="bot-2",
                cost_usd=None,
                unpriced=True,
                status=502,
                failed=True,
                error_type="upstream_error",
                timestamp="2026-03-01 11:30:00.000",
            ),
            call_row(
                tenant_id="beta",
                key_id="k9",
                actor_id="x",
                root_key_id="k9",
                root_actor_type="human",
                root_actor_id="bob",
                cost_usd=Decimal("3"),
                timestamp="2026-03-02 00:00:00.000",
            ),
        ],
    )


def base_totals(store, group: str, where: str = "1") -> list[dict]:
    return store.query(
        f"SELECT {group}, count() AS calls, countIf(failed) AS failed_calls, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(ifNull(cost_usd, 0)) AS cost_usd, countIf(unpriced) AS unpriced_calls "
        f"FROM llm_calls WHERE {where} GROUP BY {group} ORDER BY cost_usd DESC, calls DESC, {group}"
    )


def report(cli, *args) -> list[dict]:
    code, out, err = cli("report", "cost", *args, "--format", "jsonl")
    assert code == 0, err
    return [orjson.loads(line) for line in out.splitlines()]


def as_text(rows: list[dict]) -> list[dict]:
    return [{k: f"{v:f}" if isinstance(v, Decimal) else v for k, v in row.items()} for row in rows]


@pytest.mark.parametrize(
    ("by", "group"),
    [
        ("tenant", "tenant_id"),
        ("identity", "tenant_id, key_id, actor_type, actor_id"),
        ("root", "tenant_id, root_key_id, root_actor_type, root_actor_id"),
        ("model", "provider, model"),
    ],
)
def test_report_cost_sums_match_the_base_table(cli, store, seeded_calls, by, group):
    assert report(cli, "--by", by) == as_text(base_totals(store, group))


def test_report_cost_time_bounds_and_tenant(cli, store, seeded_calls):
    hourly = report(cli, "--since", "2026-03-01T10:00Z", "--until", "2026-03-01T11:00Z")
    minutely = report(cli, "--since", "2026-03-01T10:05Z", "--until", "2026-03-01T11:31Z", "--tenant", "acme")
    assert hourly == as_text(
        base_totals(store, "tenant_id", "timestamp >= '2026-03-01 10:00:00' AND timestamp < '2026-03-01 11:00:00'")
    )
    assert minutely == as_text(
        base_totals(store, "tenant_id", "tenant_id = 'acme' AND timestamp >= '2026-03-01 10:05:00'")
    )
    assert minutely[0]["calls"] == 3 and minutely[0]["unpriced_calls"] == 1


def test_report_cost_table_has_a_total_line_and_csv_has_a_header(cli, seeded_calls):
    code, out, _ = cli("report", "cost", "--by", "tenant")
    lines = out.splitlines()
    assert lines[0].split() == [
        "tenant_id",
        "calls",
        "failed_calls",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "unpriced_calls",
    ]
    assert [line.split()[0] for line in lines[2:4]] == ["beta", "acme"]
    assert lines[-2].split() == ["TOTAL", "4", "1", "310", "80", "4.750000", "1"]
    assert lines[-1].startswith("1 of 4 calls are unpriced")
    code, out, _ = cli("report", "cost", "--format", "csv")
    assert out.splitlines()[0] == "tenant_id,calls,failed_calls,input_tokens,output_tokens,cost_usd,unpriced_calls"
    assert out.splitlines()[1] == "beta,1,0,100,20,3,0"


def test_report_cost_bad_bounds_are_one_line(cli):
    code, _, err = cli("report", "cost", "--since", "2026-03-02", "--until", "2026-03-01")
    assert code == 2 and err.count("\n") == 1 and "is after --until" in err


def test_migrate_cli_prints_up_to_date(cli):
    code, out, _ = cli("migrate")
    assert code == 0 and out.splitlines() == ["schema up to date", "retention: 400 days"]


def test_report_cost_shows_a_group_without_any_priced_call_as_unknown_not_zero(cli, store):
    store.insert_rows(
        "llm_calls",
        [
            call_row(tenant_id="acme", model="gpt-4o", cost_usd=Decimal("0.5"), timestamp="2026-03-01 10:00:00.000"),
            call_row(
                tenant_id="acme", model="my-finetune", cost_usd=None, unpriced=True, timestamp="2026-03-01 10:01:00.000"
            ),
        ],
    )
    code, out, _ = cli("report", "cost", "--by", "model")
    assert code == 0
    rows = {line.split()[1]: line.split() for line in out.splitlines()[2:4]}
    assert rows["my-finetune"][-2:] == ["-", "1"]
    assert rows["gpt-4o"][-2:] == ["0.500000", "0"]
    assert out.splitlines()[-1].startswith("1 of 2 calls are unpriced")
