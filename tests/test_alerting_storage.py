"""The `alerts` and `failure_patterns` tables (clickhouse/0009, 0010) on the real embedded
engine, fed by `tokentrail.storage.alert_rows`: re-published and replayed states collapse to one row each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from detection.outputs import pattern_event
from schemas.models import SYSTEM_TENANT, Actor, Alert, FailurePattern
from tokentrail.storage.alert_rows import alert_row, pattern_row

STARTS = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def burn(status: str = "firing", value: float = 14.8, revision: int = 0, ends_at: datetime | None = None) -> Alert:
    return Alert(
        fingerprint="fp-burn",
        status=status,  # type: ignore[arg-type]
        rule="error_budget_burn",
        severity="page",
        tenant_id="acme",
        scope="model:openai/gpt-4o",
        summary=f"burn {value}x",
        labels={"model": "gpt-4o"},
        annotations={"burn_1h": str(value)},
        key_id="k1",
        actor=Actor(type="agent", id="bot"),
        root_actor=Actor(type="human", id="ana"),
        value=value,
        threshold=14.4,
        starts_at=STARTS,
        updated_at=ends_at or STARTS + timedelta(minutes=revision),
        revision=revision,
        ends_at=ends_at,
        evidence_sql="SELECT count() FROM llm_calls",
    )


def alert_rows(store) -> list[dict]:
    return store.query("SELECT * FROM alerts FINAL ORDER BY status")


def test_an_alert_episode_is_one_firing_and_one_resolved_row_however_often_published(store):
    store.insert_rows("alerts", [alert_row(burn())])
    store.insert_rows("alerts", [alert_row(burn())])  # at-least-once: the same state again
    resolved = burn("resolved", value=0.4, ends_at=STARTS + timedelta(minutes=20))
    store.insert_rows("alerts", [alert_row(resolved)])
    store.insert_rows("alerts", [alert_row(resolved)])
    rows = alert_rows(store)
    assert [(r["status"], r["value"]) for r in rows] == [("firing", 14.8), ("resolved", 0.4)]
    firing = rows[0]
    assert (firing["scope"], firing["key_id"], firing["actor"], firing["root_actor"]) == (
        "model:openai/gpt-4o",
        "k1",
        "agent:bot",
        "human:ana",
    )
    assert firing["labels"] == {"model": "gpt-4o"} and firing["annotations"] == {"burn_1h": "14.8"}
    assert firing["ends_at"] is None and firing["evidence_sql"] == "SELECT count() FROM llm_calls"
    assert rows[1]["ends_at"] == STARTS + timedelta(minutes=20)


def test_the_highest_revision_wins_even_when_an_older_one_is_replayed_last(store):
    store.insert_rows("alerts", [alert_row(burn(value=15, revision=1))])
    store.insert_rows("alerts", [alert_row(burn(value=22, revision=4))])
    store.insert_rows("alerts", [alert_row(burn(value=15, revision=1))])
    assert [(r["value"], r["revision"]) for r in alert_rows(store)] == [(22.0, 4)]


def pattern(**changes: Any) -> FailurePattern:
    fields: dict[str, Any] = {
        "pattern_id": "fp-pattern",
        "tenant_id": "acme",
        "scope": "tenant",
        "signature": "9c1e4f",
        "provider": "openai",
        "model": "gpt-4o",
        "status": 503,
        "error_type": "server_error",
        "context_hash": "3f2a9c0d1e4b5a67",
        "identities": ["k2", "k1", "k3"],
        "tenants": ["acme"],
        "count": 17,
        "first_seen": STARTS,
        "last_seen": STARTS + timedelta(minutes=4),
        "detected_at": STARTS + timedelta(minutes=4),
        **changes,
    }
    return FailurePattern(**fields)


def test_a_growing_pattern_is_one_row_at_its_latest_detection(store):
    first = pattern_row(pattern())
    assert first["identities"] == ["k1", "k2", "k3"] and first["identity_count"] == 3 and first["calls"] == 17
    store.insert_rows("failure_patterns", [first])
    later = STARTS + timedelta(minutes=6)
    grown = pattern_row(pattern(identities=["k1", "k2", "k3", "k4"], count=25, last_seen=later, detected_at=later))
    store.insert_rows("failure_patterns", [grown])
    store.insert_rows("failure_patterns", [first])  # a replay of the earlier state
    [stored] = store.query("SELECT * FROM failure_patterns FINAL")
    assert (stored["identity_count"], stored["calls"], stored["context_hash"]) == (4, 25, "3f2a9c0d1e4b5a67")
    assert (stored["pattern_id"], stored["scope"], stored["status"]) == ("fp-pattern", "tenant", 503)


def test_a_pattern_grown_twice_at_one_instant_is_two_publications_and_the_grown_one_is_kept(store):
    """Two joins in one batch of event time publish the pattern twice with one `detected_at`;
    the flows sink keeps the first row of an id, so the ids must tell the two apart (they did
    not: the events table and failure_patterns kept the three-identity version)."""
    first, grown = pattern(), pattern(identities=["k1", "k2", "k3", "k4"], count=25)
    assert pattern_row(first)["detection_id"] != pattern_row(grown)["detection_id"]
    assert pattern_event(first)["event_id"] != pattern_event(grown)["event_id"]
    assert pattern_event(grown)["event_id"] == pattern_event(pattern(identities=["k4", "k3", "k2", "k1"]))["event_id"]
    store.insert_rows("failure_patterns", [pattern_row(first)])
    store.insert_rows("failure_patterns", [pattern_row(grown)])
    [stored] = store.query("SELECT * FROM failure_patterns FINAL")
    assert stored["identity_count"] == 4


def test_a_provider_incident_belongs_to_the_system_tenant_and_names_every_tenant(store):
    row = pattern_row(pattern(tenant_id=SYSTEM_TENANT, scope="provider", tenants=["t3", "t1", "t2"], context_hash=""))
    assert row["tenants"] == ["t1", "t2", "t3"] and row["tenant_count"] == 3
    store.insert_rows("failure_patterns", [row])
    [stored] = store.query("SELECT tenant_id, tenants FROM failure_patterns FINAL")
    assert stored == {"tenant_id": SYSTEM_TENANT, "tenants": ["t1", "t2", "t3"]}
