"""The detect flow's wiring on Bytewax's testing source and sink: what reaches Kafka and the
`events` rows, with one and two workers, replays, bad records, and state across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from confluent_kafka import Message

from detection.engine import Controls, DetectionConfig
from detection.synthetic import call_event
from flows.detect import DetectTopics, add_steps, bucket_of
from flows.registry import FLOWS
from schemas.models import Alert, FailurePattern, UnifiedEvent

NAMES = DetectTopics("events", "alerts", "dlq")
T0 = 1_780_000_000.0


def message(event: dict[str, Any] | bytes, offset: int, partition: int = 0) -> Message:
    """A record of `tokentrail.events` as librdkafka hands it over, keyed by its tenant (raw bytes: no key)."""
    if isinstance(event, bytes):
        return Message(key=None, value=event, topic="events", partition=partition, offset=offset)
    value = orjson.dumps(event)
    return Message(key=event["tenant_id"].encode(), value=value, topic="events", partition=partition, offset=offset)


def build(events: list, out: list, rows: list, batch_size: int = 7, polls: list | None = None) -> Dataflow:
    """`events` in polls of `batch_size` records (or the `polls` given, as Messages)."""
    flow = Dataflow("test_detect")
    records = [e if isinstance(e, Message) else message(e, i) for i, e in enumerate(events)]
    if polls is None:
        polls = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]
    add_steps(
        flow,
        events=TestingSource(polls),  # one poll of `batch_size` records per item, as `kafka_polls` emits
        kafka_out=TestingSink(out),
        clickhouse_out=TestingSink(rows),
        names=NAMES,
        config=DetectionConfig(),
        controls=Controls(),
    )
    return flow


def run(
    events: list, workers: int = 1, batch_size: int = 7, polls: list | None = None
) -> tuple[list[tuple], list[dict]]:
    out: list = []
    rows: list = []
    flow = build(events, out, rows, batch_size, polls)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    messages = [m for _, batch in out for m in batch]
    return messages, [row for _, tables in rows for row in tables.get("events", [])]


def failing(tenant: str, identities: int, start: float, repeat: int = 2) -> list[dict]:
    return [
        call_event(tenant, start + 30 * n + i, key_id=f"{tenant}-k{i}", status=502, error_type="upstream_error")
        for n in range(repeat)
        for i in range(identities)
    ]


OUTAGE = {"status": 529, "error_type": "overloaded_error", "provider": "anthropic", "model": "claude-sonnet-4"}


def tenants_in_distinct_buckets(count: int) -> list[str]:
    return list({bucket_of(t): t for t in (f"tenant-{n}" for n in range(40))}.values())[:count]


def outage_calls(tenants: list[str], start: float, rounds: int) -> list[dict]:
    """Each tenant's two identities failing with `OUTAGE` once every 20 s, `rounds` times."""
    return [
        call_event(tenant, start + 20 * n + index, key_id=f"{tenant}-k{index % 2}", **OUTAGE)
        for n in range(rounds)
        for index, tenant in enumerate(tenants * 2)
    ]


def of_topic(messages: list[tuple], topic: str) -> list[dict]:
    return [orjson.loads(value) for name, _, value, _ in messages if name == topic]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_pattern_from_four_identities_is_one_event_one_alert_and_its_row(workers: int) -> None:
    events = [call_event("acme", T0 + n, key_id=f"ok{n % 5}") for n in range(40)]
    events += failing("acme", 4, T0 + 100)
    events += failing("solo", 1, T0 + 100, repeat=30)  # one identity failing thirty times
    messages, rows = run(events, workers)
    detected = [UnifiedEvent.model_validate(e) for e in of_topic(messages, "events")]
    patterns = [FailurePattern.model_validate(e.payload) for e in detected if e.event_type == "pattern_detected"]
    # published when it fires (three identities) and again as the fourth joins: one pattern
    assert [p.identities for p in patterns] == [[f"acme-k{i}" for i in range(n)] for n in (3, 4)]
    assert {p.pattern_id for p in patterns} == {patterns[0].pattern_id} and patterns[0].tenant_id == "acme"
    alerts = [Alert.model_validate(a) for a in of_topic(messages, "alerts")]
    pattern_alerts = [a for a in alerts if a.rule == "failure_pattern"]
    assert {(a.tenant_id, a.status) for a in pattern_alerts} == {("acme", "firing")}
    # both tenants fail every call in their last minutes: error-budget pages for each
    assert {a.tenant_id for a in alerts if a.rule == "error_budget_burn"} == {"acme", "solo"}
    keys = {key for name, key, value, _ in messages if name == "alerts" and b"failure_pattern" in value}
    assert keys == {pattern_alerts[0].fingerprint.encode()}
    assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in detected)


def test_a_provider_incident_notifies_once_when_each_batch_spans_minutes_of_event_time() -> None:
    # a replay or a backlog: each batch holds ~17 minutes of an hour-long outage seen by three
    # tenants in three state buckets; the buckets hand their failures on one after another
    messages, _ = run(outage_calls(tenants_in_distinct_buckets(3), T0, 180), batch_size=300)
    alerts = [Alert.model_validate(a) for a in of_topic(messages, "alerts") if a["rule"] == "provider_incident"]
    assert [a.revision for a in alerts if a.status == "firing"][:1] == [0]
    assert [a.status for a in alerts].count("resolved") == 0 and len({a.fingerprint for a in alerts}) == 1


def test_a_provider_incident_notifies_once_when_one_input_partition_runs_hours_ahead() -> None:
    # a backlog read partition by partition: the outage's failures sit in partition 0, an hour
    # later other tenants' traffic (with failures of their own) in partition 1, and the polls
    # of partition 1 arrive between those of partition 0
    tenants = tenants_in_distinct_buckets(4)

    def outage_poll(start: float, offset: int) -> list[Message]:
        calls = outage_calls(tenants[:3], start, 15)
        return [message(event, offset + number, partition=0) for number, event in enumerate(calls)]

    ahead = [
        message(
            call_event(tenants[3], T0 + 3600 + 60 * n, key_id="other", status=400, error_type="bad"), n, partition=1
        )
        for n in range(60)
    ]
    # and partition 2 is a day behind both (its clock is the slowest): nothing may be judged
    # at its time, before the incident even began
    behind = [message(call_event(tenants[3], T0 - 86400 + 60 * n), n, partition=2) for n in range(30)]
    polls = [outage_poll(T0, 0), behind[:10], ahead[:30], behind[10:20], ahead[30:], behind[20:]]
    polls += [outage_poll(T0 + 300, 90), outage_poll(T0 + 600, 180)]
    messages, _ = run([], polls=polls)
    alerts = [Alert.model_validate(a) for a in of_topic(messages, "alerts") if a["rule"] == "provider_incident"]
    notified = [(a.status, a.revision) for a in alerts if a.status == "resolved" or a.revision == 0]
    assert notified == [("firing", 0)], "fired once, and not resolved while partition 0 still had the outage"


def test_a_provider_incident_resolves_while_calls_go_on_without_failures() -> None:
    tenants = tenants_in_distinct_buckets(3)
    events = outage_calls(tenants, T0, 15)
    events += [call_event(tenants[n % 3], T0 + 300 + 10 * n) for n in range(120)]  # 20 minutes of good calls
    messages, _ = run(events, batch_size=20)
    alerts = [Alert.model_validate(a) for a in of_topic(messages, "alerts") if a["rule"] == "provider_incident"]
    assert [a.status for a in alerts if a.status == "resolved" or a.revision == 0] == ["firing", "resolved"]


def test_a_replayed_topic_detects_the_same_and_bad_records_go_to_the_dlq() -> None:
    events = failing("acme", 3, T0)
    broken = call_event("acme", T0 + 5)
    del broken["payload"]["key_id"]
    mislabelled = Message(
        key=b"other", value=orjson.dumps(call_event("acme", T0 + 6)), topic="events", partition=0, offset=6
    )
    messages, _ = run([*events, *events, b"{not json", broken, mislabelled])
    assert len([e for e in of_topic(messages, "events") if e["event_type"] == "pattern_detected"]) == 1
    reasons = sorted(letter["reason"] for letter in of_topic(messages, "dlq"))
    assert len(reasons) == 3
    assert "KeyError: 'key_id'" in reasons[0] and reasons[2].startswith("detect: unexpected character")
    assert reasons[1].startswith("detect: record key b'other' is not its tenant_id 'acme'")


def test_detection_state_survives_a_restart(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    first = failing("acme", 2, T0)  # two identities: no pattern yet
    out: list = []
    run_main(build(first, out, [], batch_size=2), epoch_interval=None, recovery_config=recovery)
    assert not [m for _, batch in out for m in batch]
    # the restarted flow resumes after what it read (in its place here: harmless successes, so
    # only state restored from the snapshot can know the first two identities); the third
    # identity completes the pattern (polls of two records: the testing source resumes by poll)
    out = []
    placeholders = [call_event("acme", T0 + n, key_id="ok") for n in range(len(first))]
    run_main(build([*placeholders, failing("acme", 3, T0 + 60)[2]], out, [], batch_size=2), recovery_config=recovery)
    patterns = [e for e in of_topic([m for _, b in out for m in b], "events") if e["event_type"] == "pattern_detected"]
    assert len(patterns) == 1 and patterns[0]["payload"]["identities"] == ["acme-k0", "acme-k1", "acme-k2"]


def test_the_detect_flow_is_registered() -> None:
    assert FLOWS["detect"].builder().__module__ == "flows.detect"


def test_alerts_and_patterns_become_rows_that_collapse_to_their_latest_state_in_storage(store) -> None:
    events = [call_event("acme", T0 + n, key_id=f"ok{n % 5}") for n in range(40)] + failing("acme", 4, T0 + 100)
    out: list = []
    batches: list = []
    run_main(build(events, out, batches))
    tables: dict[str, list[dict]] = {}
    for _, rows in batches:
        for table, batch in rows.items():
            tables.setdefault(table, []).extend(batch)
    alerts = [Alert.model_validate(a) for a in of_topic([m for _, b in out for m in b], "alerts")]
    assert len(tables["alerts"]) == len(alerts) and len({r["alert_id"] for r in tables["alerts"]}) == len(alerts)
    assert [len(r["identities"]) for r in tables["failure_patterns"]] == [3, 4]
    store.insert_rows("alerts", tables["alerts"])
    store.insert_rows("failure_patterns", tables["failure_patterns"])
    [pattern] = store.query("SELECT tenant_id, identities FROM failure_patterns FINAL")
    assert pattern == {"tenant_id": "acme", "identities": [f"acme-k{i}" for i in range(4)]}
    stored = store.query("SELECT DISTINCT fingerprint, rule FROM alerts FINAL WHERE rule = 'failure_pattern'")
    assert [r["fingerprint"] for r in stored] == [a.fingerprint for a in alerts if a.rule == "failure_pattern"][:1]
