"""The `alerts` and `failure_patterns` tables (clickhouse/0009, 0010) on the real embedded
engine, fed by `alerting.rows`: re-published and replayed states collapse to one row each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerting.rows import alert_row, pattern_row, signature_id
from schemas.models import SYSTEM_TENANT, Alert

STARTS = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def burn(status: str = "firing", value: float = 14.8, ends_at: datetime | None = None) -> Alert:
    return Alert(
        fingerprint="fp-burn",
        status=status,  # type: ignore[arg-type]
        rule="error_budget_burn",
        severity="page",
        tenant_id="acme",
        summary=f"burn {value}x",
        labels={"scope": "tenant:acme"},
        value=value,
        threshold=14.4,
        starts_at=STARTS,
        ends_at=ends_at,
    )


def alert_rows(store) -> list[dict]:
    return store.query(
        "SELECT fingerprint, status, scope, value, labels, starts_at, ends_at FROM alerts FINAL ORDER BY status"
    )


def test_an_alert_episode_is_one_firing_and_one_resolved_row_however_often_published(store):
    store.insert_rows("alerts", [alert_row(burn())])
    store.insert_rows("alerts", [alert_row(burn())])  # at-least-once: the same state again
    resolved = burn("resolved", value=0.4, ends_at=STARTS + timedelta(minutes=20))
    store.insert_rows("alerts", [alert_row(resolved)])
    store.insert_rows("alerts", [alert_row(resolved)])
    rows = alert_rows(store)
    assert [(r["status"], r["value"]) for r in rows] == [("firing", 14.8), ("resolved", 0.4)]
    assert rows[0]["scope"] == "tenant:acme" and rows[0]["labels"] == {"scope": "tenant:acme"}
    assert rows[0]["ends_at"] is None
    assert rows[1]["ends_at"] == STARTS + timedelta(minutes=20)


def test_a_replay_of_an_older_update_does_not_overwrite_a_newer_one(store):
    class UpdatedAlert(Alert):
        updated_at: datetime | None = None

    early = UpdatedAlert(**burn(value=15).model_dump(), updated_at=STARTS + timedelta(minutes=1))
    late = UpdatedAlert(**burn(value=22).model_dump(), updated_at=STARTS + timedelta(minutes=4))
    store.insert_rows("alerts", [alert_row(early)])
    store.insert_rows("alerts", [alert_row(late)])
    store.insert_rows("alerts", [alert_row(early)])  # replayed after the newer one
    assert [r["value"] for r in alert_rows(store)] == [22.0]


def pattern(**changes) -> dict:
    return {
        "tenant_id": "acme",
        "signature": {"provider": "openai", "model": "gpt-4o", "status": 503, "error_type": "server_error"},
        "identities": ["agent:b", "agent:a", "human:c", "agent:a"],
        "first_seen": STARTS,
        "last_seen": "2026-03-01T12:04:00.000Z",
        "count": 17,
        **changes,
    }


def test_a_pattern_row_names_its_signature_identities_and_tenants(store):
    row = pattern_row(pattern())
    assert row["signature"] == signature_id(
        {"provider": "openai", "model": "gpt-4o", "status": 503, "error_type": "server_error"}
    )
    assert (row["provider"], row["model"], row["status"], row["error_type"]) == (
        "openai",
        "gpt-4o",
        503,
        "server_error",
    )
    assert row["identities"] == ["agent:a", "agent:b", "human:c"] and row["identity_count"] == 3
    assert row["tenants"] == ["acme"] and row["calls"] == 17
    store.insert_rows("failure_patterns", [row])
    grown = pattern_row(
        pattern(
            identities=["agent:a", "agent:b", "human:c", "human:d"], last_seen=STARTS + timedelta(minutes=6), count=25
        )
    )
    store.insert_rows("failure_patterns", [grown])
    store.insert_rows("failure_patterns", [row])  # a replay of the earlier state
    [stored] = store.query("SELECT identities, identity_count, calls, last_seen FROM failure_patterns FINAL")
    assert stored["identity_count"] == 4 and stored["calls"] == 25


def test_a_cross_tenant_pattern_belongs_to_the_system_tenant_and_names_every_tenant():
    row = pattern_row(pattern(tenant_id=SYSTEM_TENANT, tenants=["t3", "t1", "t2"], signature="sig-1"))
    assert row["tenant_id"] == SYSTEM_TENANT and row["tenants"] == ["t1", "t2", "t3"] and row["tenant_count"] == 3
    assert row["signature"] == "sig-1"
    assert pattern_row(pattern(tenant_id=SYSTEM_TENANT, signature="sig-1"))["tenants"] == []


def test_signature_ids_differ_when_any_part_differs():
    base = {
        "provider": "openai",
        "model": "gpt-4o",
        "status": 503,
        "error_type": "x",
        "error_code": "",
        "context_hash": "c1",
    }
    assert signature_id(base) == signature_id(dict(base))
    for part, other in [("model", "gpt-4o-mini"), ("status", 502), ("context_hash", "c2"), ("error_code", "e")]:
        assert signature_id({**base, part: other}) != signature_id(base)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tenant_id": ""}, "tenant_id is required"),
        ({"signature": None}, "signature is required"),
        ({"first_seen": "yesterday"}, "first_seen must be a timestamp"),
        ({"last_seen": None}, "last_seen must be a timestamp"),
        ({"signature": {"status": "503"}}, "status must be an HTTP status"),
    ],
)
def test_a_malformed_pattern_is_refused_with_the_field_named(changes, message):
    with pytest.raises(ValueError, match=message):
        pattern_row(pattern(**changes))
