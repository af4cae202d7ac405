"""`tokentrail report alerts|patterns` and the alert events in `tokentrail events`, run in-process
on a seeded embedded store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.models import SYSTEM_TENANT, Actor, Alert, FailurePattern
from tests.fixtures.clickhouse import event_row
from tests.test_storage_cli import cli  # noqa: F401 - the fixture running `tokentrail` in-process
from tokentrail.storage.alert_rows import alert_row, pattern_row

NOW = datetime.now(UTC).replace(microsecond=0)


def episode(
    fingerprint: str, tenant: str, starts: datetime, status: str = "firing", ends: datetime | None = None
) -> Alert:
    return Alert(
        fingerprint=fingerprint,
        status=status,  # type: ignore[arg-type]
        rule="error_budget_burn",
        severity="page",
        tenant_id=tenant,
        summary=f"{tenant} burns its error budget",
        key_id="k1",
        actor=Actor(type="agent", id="bot"),
        root_actor=Actor(type="human", id="ana"),
        value=14.8 if status == "firing" else 0.2,
        threshold=14.4,
        starts_at=starts,
        ends_at=ends,
    )


@pytest.fixture
def seeded_alerts(store):
    old = NOW - timedelta(days=3)
    rows = [
        episode("fp-old", "acme", old),
        episode("fp-old", "acme", old, "resolved", old + timedelta(minutes=30)),
        episode("fp-now", "acme", NOW - timedelta(minutes=20)),
        episode("fp-other", "other", NOW - timedelta(minutes=5)),
    ]
    store.insert_rows("alerts", [alert_row(a) for a in rows])
    patterns = [
        ("acme", "tenant", ["a", "b", "c", "d"], ["acme"], 30),
        (SYSTEM_TENANT, "provider", ["x", "y", "z"], ["acme", "t2", "t3"], 90),
        ("other", "tenant", ["p", "q", "r"], ["other"], 9),
    ]
    store.insert_rows(
        "failure_patterns",
        [
            pattern_row(
                FailurePattern(
                    pattern_id=f"fp-{tenant}",
                    tenant_id=tenant,
                    scope=scope,  # type: ignore[arg-type]
                    signature="9c1e4f",
                    provider="openai",
                    model="gpt-4o",
                    status=503,
                    error_type="server_error",
                    identities=identities,
                    tenants=tenants,
                    count=count,
                    first_seen=NOW - timedelta(minutes=9),
                    last_seen=NOW,
                    detected_at=NOW,
                )
            )
            for tenant, scope, identities, tenants, count in patterns
        ],
    )


def json_lines(out: str) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines()]


def test_report_alerts_shows_one_line_per_episode_at_its_latest_state(cli, seeded_alerts):  # noqa: F811
    code, out, err = cli("report", "alerts", "--tenant", "acme", "--json")
    assert code == 0, err
    rows = json_lines(out)
    assert [(r["fingerprint"], r["status"]) for r in rows] == [("fp-old", "resolved"), ("fp-now", "firing")]
    assert rows[1]["value"] == 14.8 and rows[1]["ends_at"] is None and rows[1]["scope"] == "tenant"
    assert rows[0]["ends_at"].endswith("Z")


def test_report_alerts_since_a_duration_keeps_episodes_still_open_then(cli, seeded_alerts):  # noqa: F811
    code, out, _ = cli("report", "alerts", "--since", "1h", "--json")
    assert sorted(r["fingerprint"] for r in json_lines(out)) == ["fp-now", "fp-other"]
    code, out, _ = cli("report", "alerts", "--tenant", "acme", "--since", "10m")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["starts_at", "ends_at", "tenant", "status"]
    assert len(lines) == 3 and "firing" in lines[2]  # fp-now, still open: fp-old ended days ago
    assert "agent:bot (for human:ana)" in lines[2]


def test_report_patterns_for_a_tenant_includes_provider_incidents_naming_it(cli, seeded_alerts):  # noqa: F811
    code, out, err = cli("report", "patterns", "--tenant", "acme", "--json")
    assert code == 0, err
    rows = json_lines(out)
    assert sorted((r["tenant_id"], r["identity_count"]) for r in rows) == [(SYSTEM_TENANT, 3), ("acme", 4)]
    system = next(r for r in rows if r["tenant_id"] == SYSTEM_TENANT)
    assert system["tenants"] == ["acme", "t2", "t3"] and system["calls"] == 90
    code, out, _ = cli("report", "patterns")
    assert code == 0 and len(out.splitlines()) == 2 + 3 and "acme,t2,t3" in out


@pytest.mark.parametrize("flag", ["--since", "--until"])
def test_report_alerts_refuses_a_bad_moment_in_one_line(cli, store, flag):  # noqa: F811
    code, out, err = cli("report", "alerts", flag, "last tuesday")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and flag in err and "ISO 8601" in err


def test_alert_and_pattern_events_are_in_the_tenant_timeline(cli, store):  # noqa: F811
    store.insert_rows(
        "events",
        [
            event_row(
                event_id="e1", event_type="alert_fired", event_source="flows", timestamp="2026-03-01 10:05:00.000"
            ),
            event_row(
                event_id="e2", event_type="pattern_detected", event_source="flows", timestamp="2026-03-01 10:06:00.000"
            ),
            event_row(
                event_id="e3", event_type="alert_resolved", event_source="flows", timestamp="2026-03-01 10:40:00.000"
            ),
        ],
    )
    window = ("--tenant", "acme", "--since", "2026-03-01T10:00:00Z", "--until", "2026-03-01T11:00:00Z")
    code, out, err = cli("events", *window, "--format", "jsonl")
    assert code == 0, err
    assert [(e["event_id"], e["event_type"]) for e in json_lines(out)] == [
        ("e1", "alert_fired"),
        ("e2", "pattern_detected"),
        ("e3", "alert_resolved"),
    ]
    code, out, _ = cli("events", *window, "--type", "alert_fired", "--type", "alert_resolved")
    assert code == 0 and "alert_fired" in out and "alert_resolved" in out and "pattern_detected" not in out
