"""Detectors on hand-made series: the SRE Workbook's closed-form cases, minimum volume,
dedup, alert lifecycle, spend spikes, budgets and failure patterns (no engine, no Kafka)."""

from __future__ import annotations

import math
import random
import uuid
from array import array

import pytest

from detection.burn import DEFAULT_RULES, BurnRule
from detection.calls import EventError, read_call
from detection.dedup import RecentIds
from detection.engine import Controls, Detection, DetectionConfig, Result
from detection.lifecycle import AlertBook, Finding
from detection.synthetic import call_event
from detection.windows import MultiWindow, SlidingSums
from schemas.models import SYSTEM_TENANT, Budget, Slo

T0 = 1_780_000_000.0  # a fixed event time, 2026-05-28


def run(detection: Detection, events: list[dict]) -> Result:
    result = Result()
    for event in events:
        result.extend(detection.observe(event))
    return result


def fired(result: Result, rule: str) -> list:
    return [c for c in result.changes if c.kind == "fired" and c.alert.rule == rule]


def steady(tenant: str, start: float, seconds: float, every: float, bad_every: int = 0, **kw) -> list[dict]:
    """One call every `every` seconds; every `bad_every`-th one a 503 (0: none)."""
    events = []
    for index in range(int(seconds / every)):
        bad = bad_every and index % bad_every == bad_every - 1
        events.append(call_event(tenant, start + index * every, status=503 if bad else 200, **kw))
    return events


def with_slo(tenant: str, target: float) -> Controls:
    controls = Controls()
    controls.apply(Slo(scope=f"tenant:{tenant}", target=target, changed_at="2026-01-01T00:00:00Z"))
    return controls


# ---- error budget: SRE Workbook closed forms ------------------------------------------------


def test_full_outage_against_999_pages_within_about_a_minute_on_the_1h_5m_pair() -> None:
    detection = Detection(controls=with_slo("acme", 0.999))
    healthy = steady("acme", T0, 6 * 3600, 2.0)  # six hours, so the 6 h / 30 m pair has its full window
    outage_start = T0 + 6 * 3600
    outage = steady("acme", outage_start, 600, 2.0, bad_every=1)
    result = run(detection, healthy + outage)
    pages = fired(result, "error_budget_burn")
    tenant_page = [c for c in pages if c.alert.scope == "tenant"]
    assert len(tenant_page) == 1
    delay = tenant_page[0].alert.starts_at.timestamp() - outage_start
    # closed form: 1 h error ratio reaches 14.4 * 0.1% after 0.0144 h = 52 s; a bucket is 1 min
    assert 45 <= delay <= 70, delay
    assert tenant_page[0].alert.severity == "page"
    assert tenant_page[0].alert.annotations["long_window"] == "1 h"


def test_a_14_4x_burn_pages_and_a_steady_09x_burn_never_alerts() -> None:
    # 99% SLO: 15% errors is a 15x burn
    burning = run(Detection(), steady("hot", T0, 3 * 3600, 5.0) + steady("hot", T0 + 3 * 3600, 3600, 5.0, 20 // 3))
    assert [c.alert.severity for c in fired(burning, "error_budget_burn") if c.alert.scope == "tenant"] == ["page"]
    # 0.9% errors (one call in 111) for four days: under every rule, including the 1x ticket
    calm = run(Detection(), steady("calm", T0, 4 * 86400, 10.0, bad_every=111))
    assert calm.changes == []


def test_a_burn_between_1x_and_6x_opens_a_ticket_not_a_page() -> None:
    # 3% errors (3x): no page rule holds; the ticket rule (here 1x over 12 h and 1 h, as
    # configured) does once the tenant has 12 h of history
    rules = (*DEFAULT_RULES[:2], BurnRule("ticket", 1.0, 12 * 3600, 3600))
    result = run(Detection(DetectionConfig(rules=rules)), steady("slow", T0, 16 * 3600, 10.0, bad_every=33))
    severities = [c.alert.severity for c in fired(result, "error_budget_burn") if c.alert.scope == "tenant"]
    assert severities == ["ticket"]
    assert result.changes[0].alert.starts_at.timestamp() >= T0 + 12 * 3600


def test_per_model_scope_names_the_failing_model_only() -> None:
    events = steady("acme", T0, 3600, 2.0, model="gpt-4o") + steady("acme", T0 + 1, 3600, 2.0, model="o3")
    events += steady("acme", T0 + 3600, 600, 2.0, bad_every=1, model="o3")
    events += steady("acme", T0 + 3601, 600, 2.0, model="gpt-4o")
    events.sort(key=lambda event: event["timestamp"])
    scopes = {c.alert.scope for c in fired(run(Detection(), events), "error_budget_burn")}
    assert scopes == {"tenant", "model:openai/o3"}


# ---- minimum volume -------------------------------------------------------------------------


def test_low_traffic_does_not_page_on_one_failure_but_does_on_an_outage() -> None:
    quiet = steady("tiny", T0, 86400, 360.0)  # ten calls an hour
    quiet[50] = call_event("tiny", T0 + 50 * 360.0, status=500)
    assert run(Detection(), quiet).changes == []
    outage = steady("tiny", T0, 86400, 360.0) + steady("tiny", T0 + 86400, 7200, 360.0, bad_every=1)
    pages = [c for c in fired(run(Detection(), outage), "error_budget_burn") if c.alert.scope == "tenant"]
    assert len(pages) == 1
    # the fifth failure completes the minimum volume
    assert pages[0].alert.starts_at.timestamp() == pytest.approx(T0 + 86400 + 4 * 360.0)


def test_minimum_volume_is_configurable() -> None:
    quiet = steady("tiny", T0, 7200, 360.0)
    quiet[10] = call_event("tiny", T0 + 10 * 360.0, status=500)
    assert fired(run(Detection(DetectionConfig(min_bad=1, min_short_bad=1)), quiet), "error_budget_burn")


# ---- at-least-once input --------------------------------------------------------------------


def test_replayed_events_never_count_twice() -> None:
    events = steady("acme", T0, 3600, 1.0) + steady("acme", T0 + 3600, 30, 1.0, bad_every=1)
    once = run(Detection(DetectionConfig(min_bad=40)), events)
    replayed = []
    for index, event in enumerate(events):  # every event twice, the repeat a little later
        replayed.append(event)
        if index >= 5:
            replayed.append(events[index - 5])
    twice = run(Detection(DetectionConfig(min_bad=40)), replayed)
    assert fired(once, "error_budget_burn") == [] == fired(twice, "error_budget_burn")
    # with only 30 distinct failures, a detector counting repeats would have reached 40


def test_recent_ids_stay_bounded_and_refuse_what_they_cannot_check() -> None:
    ids = RecentIds(horizon=100.0, capacity=3)
    assert [ids.first_time(f"e{n}", T0 + n) for n in range(5)] == [True] * 5
    assert len(ids) == 3
    assert not ids.first_time("e4", T0 + 4)  # remembered: a repeat
    assert not ids.first_time("e0", T0 + 0)  # forgotten, but at or under the floor: refused
    assert ids.repeats == 1 and ids.refused_late == 1
    assert ids.first_time("e9", T0 + 200)  # time moves on: everything older than 100 s is forgotten
    assert len(ids) == 1


def test_sliding_sums_drop_what_leaves_the_window() -> None:
    ring = SlidingSums(10.0, 7, 1)
    for second in range(0, 60, 10):
        ring.add(T0 + second, (1.0,))
    assert ring.sums(6) == [6.0]
    ring.advance(T0 + 75)
    assert ring.sums(6) == [4.0]  # the buckets of T0 and T0 + 10 left the last six
    assert ring.sums(2) == [0.0]
    assert not ring.add(T0 - 100, (1.0,))  # older than the ring: not counted
    ring.add(T0 + 50, (2.0,))  # late, but inside the window: counted
    assert ring.sums(6) == [6.0]
    ring.advance(T0 + 1000)
    assert ring.sums(6) == [0.0]


def test_a_ring_snapshot_from_before_running_totals_resumes_with_the_same_sums() -> None:
    # the old layout: each bucket holds its own counts; bucket 92 is left over from an older lap
    counts, stamps = array("d", [0.0] * 7), array("q", [-(1 << 62)] * 7)
    for number, value in ((92, 8.0), (95, 1.0), (97, 2.0), (100, 4.0)):
        counts[number % 7], stamps[number % 7] = value, number
    old = {"bucket_seconds": 10.0, "buckets": 7, "width": 1, "cells": counts, "stamps": stamps, "head": 100}
    ring = SlidingSums.__new__(SlidingSums)
    ring.__setstate__((None, {**old, "cached_for": 100, "behind": []}))
    assert ring.sums(6) == [7.0] and ring.sums(3) == [4.0] and ring.sums(1) == [4.0]
    ring.add(1000.0, (1.0,))  # bucket 100 again, then time moves on
    ring.advance(1030.0)
    assert ring.sums(6) == [5.0] and ring.sums(3) == [0.0]  # buckets 98-103, then 101-103


def test_windows_share_rings_and_sum_exactly_to_one_bucket() -> None:
    windows = MultiWindow((300.0, 3600.0, 3 * 86400.0), 2)
    assert sorted((ring.bucket_seconds, ring.buckets) for ring in windows.rings.values()) == [(60.0, 61), (3600.0, 73)]
    for minute in range(180):  # one call a minute for three hours, every tenth one bad
        windows.add(T0 + 60 * minute + 1, (1.0, 1.0 if minute % 10 == 0 else 0.0))
    assert windows.sums(300.0) == [5.0, 0.0]
    assert windows.sums(3600.0) == [60.0, 6.0]
    assert windows.sums(3 * 86400.0) == [180.0, 18.0]


# ---- lifecycle --------------------------------------------------------------------------------


def _finding(value: float = 20.0, severity: str = "ticket") -> Finding:
    return Finding("acme", "spend_spike", "key:k1", severity, "acme spends", value, 10.0)  # type: ignore[arg-type]


def test_alert_fires_once_updates_while_firing_and_resolves_after_the_clear_delay() -> None:
    book = AlertBook(clear_for=300, update_every=60)
    fire = book.holds(_finding(), T0)
    assert fire is not None and fire.kind == "fired" and fire.notifies and fire.alert.revision == 0
    assert book.holds(_finding(), T0 + 30) is None  # too soon for an update
    update = book.holds(_finding(25.0), T0 + 90)
    assert update is not None and update.kind == "updated" and not update.notifies
    assert update.alert.fingerprint == fire.alert.fingerprint and update.alert.starts_at == fire.alert.starts_at
    assert update.alert.revision == 1 and update.alert.value == 25.0
    escalation = book.holds(_finding(severity="page"), T0 + 100)
    assert escalation is not None and escalation.kind == "fired" and escalation.alert.severity == "page"
    assert book.clear("acme", "spend_spike", "key:k1", T0 + 200) is None
    assert book.clear("acme", "spend_spike", "key:k1", T0 + 499) is None
    resolved = book.clear("acme", "spend_spike", "key:k1", T0 + 500)
    assert resolved is not None and resolved.kind == "resolved" and resolved.alert.status == "resolved"
    assert resolved.alert.ends_at is not None and resolved.alert.fingerprint == fire.alert.fingerprint


def test_a_flapping_condition_keeps_one_alert() -> None:
    book = AlertBook(clear_for=300, update_every=60)
    changes = []
    for step in range(100):  # true and false every other minute for 100 minutes
        at = T0 + 60 * step
        change = book.holds(_finding(), at) if step % 2 == 0 else book.clear("acme", "spend_spike", "key:k1", at)
        if change is not None:
            changes.append(change.kind)
    assert changes.count("fired") == 1 and "resolved" not in changes


def test_error_budget_alert_resolves_after_recovery_even_when_the_tenant_goes_quiet() -> None:
    events = steady("acme", T0, 3600, 1.0) + steady("acme", T0 + 3600, 300, 1.0, bad_every=1)
    events += steady("other", T0 + 3900, 3 * 3600, 10.0)  # only another tenant's traffic moves time
    result = run(Detection(), events)
    kinds = [(c.kind, c.alert.scope) for c in result.changes if c.alert.tenant_id == "acme" and c.kind != "updated"]
    assert ("fired", "tenant") in kinds and ("resolved", "tenant") in kinds


# ---- spend spike ------------------------------------------------------------------------------


def _daily_traffic(tenant: str, key: str, days: int, seed: int, monday_boost: float = 1.0) -> list[dict]:
    """Poisson calls with a daily cycle (peak at 14:00, 20x the night), $0.002-0.2 each."""
    rng = random.Random(seed)
    events, at = [], T0
    while at < T0 + days * 86400:
        hour = (at % 86400) / 3600
        rate = 0.002 + 0.04 * max(0.0, math.sin(math.pi * (hour - 6) / 16)) ** 2  # calls/s
        if monday_boost > 1 and days * 86400 - 86400 < at - T0 and 8 <= hour < 12:
            rate *= monday_boost
        at += rng.expovariate(rate)
        events.append(call_event(tenant, at, key_id=key, cost_usd=rng.choice([0.002, 0.01, 0.03, 0.2])))
    return events


def test_ordinary_daily_variation_and_a_busy_monday_morning_never_page() -> None:
    result = run(Detection(), _daily_traffic("acme", "svc", days=4, seed=1, monday_boost=3.0))
    assert fired(result, "spend_spike") == []


def test_a_runaway_agent_is_caught_within_five_minutes_and_rolled_up_to_its_human() -> None:
    events = _daily_traffic("acme", "agent-7", days=2, seed=2)
    begin = T0 + 2 * 86400 + 3600
    loop = [
        call_event("acme", begin + n, key_id="agent-7", actor=("agent", "loop"), root=("human", "alice"), cost_usd=0.05)
        for n in range(600)  # a call a second at $0.05: $180/h, about 20x this identity's daily peak
    ]
    assert events[-1]["timestamp"] < loop[0]["timestamp"]
    spikes = fired(run(Detection(), events + loop), "spend_spike")
    assert len(spikes) == 1
    alert = spikes[0].alert
    assert alert.starts_at.timestamp() - begin <= 300
    assert alert.key_id == "agent-7" and alert.root_actor is not None and alert.root_actor.id == "alice"
    assert alert.labels["root_actor"] == "human:alice" and "on behalf of human alice" in alert.summary
    assert "key_id = 'agent-7'" in (alert.evidence_sql or "")


def test_a_new_identity_needs_volume_before_a_spike() -> None:
    expensive = [call_event("acme", T0 + n * 30, key_id="new", cost_usd=2.0) for n in range(5)]
    assert fired(run(Detection(), expensive), "spend_spike") == []


# ---- spend budget ------------------------------------------------------------------------------


def test_budget_burn_says_when_the_budget_is_gone_and_exhaustion_is_a_hard_alert() -> None:
    controls = Controls()
    controls.apply(Budget(scope="tenant:acme", period="day", amount_usd=100, changed_at="2026-01-01T00:00:00Z"))
    day_start = 1_780_012_800.0  # 2026-05-29 00:00 UTC
    # $24/h against $100/day is a 5.76x burn... then $120/h is 28.8x: the 1 h / 5 m page
    events = [call_event("acme", day_start + 60 * n, cost_usd=0.4) for n in range(60)]
    events += [call_event("acme", day_start + 3600 + 10 * n, cost_usd=0.3333) for n in range(360 * 3)]
    result = run(Detection(controls=controls), events)
    burns = fired(result, "budget_burn")
    assert burns and burns[0].alert.severity == "page"
    assert "at this rate the budget is gone in" in burns[0].alert.summary
    exhausted = fired(result, "budget_exhausted")
    assert len(exhausted) == 1 and exhausted[0].alert.severity == "page"
    assert exhausted[0].alert.value is not None and exhausted[0].alert.value >= 100


def test_a_key_budget_counts_calls_of_its_delegated_agents() -> None:
    controls = Controls()
    controls.apply(Budget(scope="key:root-alice", period="day", amount_usd=1, changed_at="2026-01-01T00:00:00Z"))
    events = [
        call_event("acme", T0 + n, key_id="agent-1", actor=("agent", "a1"), root=("human", "alice"), cost_usd=0.1)
        for n in range(11)
    ]
    exhausted = fired(run(Detection(controls=controls), events), "budget_exhausted")
    assert [c.alert.scope for c in exhausted] == ["key:root-alice"]


# ---- failure patterns --------------------------------------------------------------------------


def _failures(tenant: str, identities: int, start: float, per_identity: int = 2, **kw) -> list[dict]:
    events = []
    for n in range(per_identity):
        for index in range(identities):
            at = start + 20 * n + index
            events.append(
                call_event(tenant, at, key_id=f"{tenant}-k{index}", status=502, error_type="upstream_error", **kw)
            )
    return events


@pytest.mark.parametrize(("identities", "patterns"), [(2, 0), (3, 1), (6, 1)])
def test_a_pattern_needs_n_distinct_identities(identities: int, patterns: int) -> None:
    result = run(Detection(), _failures("acme", identities, T0, context_hash="ctx1"))
    found = [p for p in result.patterns if p.scope == "tenant"]
    assert len({p.pattern_id for p in found}) == patterns
    if patterns:  # published when it fires, again as each identity joins
        assert found[0].identities == ["acme-k0", "acme-k1", "acme-k2"]
        assert found[-1].identities == [f"acme-k{i}" for i in range(identities)]
        assert len(found) == identities - 2
        assert found[0].context_hash == "ctx1" and found[0].status == 502
        assert len(fired(result, "failure_pattern")) == 1


def test_pattern_decoys_one_identity_failing_a_thousand_times_or_many_different_errors() -> None:
    hammer = [call_event("acme", T0 + n * 0.5, key_id="k0", status=503, error_type="overloaded") for n in range(1000)]
    assert run(Detection(), hammer).patterns == []
    mixed = [
        call_event("acme", T0 + n, key_id=f"k{n}", status=500 + n % 5, error_type=f"kind{n}", context_hash=f"c{n}")
        for n in range(40)
    ]
    assert run(Detection(), mixed).patterns == []


def test_identities_outside_the_window_do_not_make_a_pattern() -> None:
    spread = [
        call_event("acme", T0 + 700 * n, key_id=f"k{n}", status=502, error_type="upstream_error") for n in range(5)
    ]
    assert run(Detection(), spread).patterns == []


def test_the_same_failure_across_three_tenants_is_a_provider_incident_naming_them() -> None:
    two = run(Detection(), _failures("a", 1, T0) + _failures("b", 2, T0 + 1))
    assert [p for p in two.patterns if p.scope == "provider"] == []
    once_each = run(Detection(), _failures("a", 1, T0, 1) + _failures("b", 1, T0 + 1, 1) + _failures("c", 1, T0 + 2, 1))
    assert [p for p in once_each.patterns if p.scope == "provider"] == []  # one failure each: background noise
    three = run(Detection(), _failures("a", 1, T0) + _failures("b", 1, T0 + 1) + _failures("c", 1, T0 + 2))
    incidents = [p for p in three.patterns if p.scope == "provider"]
    assert len(incidents) == 1
    assert incidents[0].tenant_id == SYSTEM_TENANT and incidents[0].tenants == ["a", "b", "c"]
    alert = fired(three, "provider_incident")[0].alert
    assert alert.tenant_id == SYSTEM_TENANT and alert.annotations["tenants"] == "a,b,c"


# ---- input -----------------------------------------------------------------------------------------


def test_an_unreadable_call_event_is_a_clear_error_and_other_events_are_ignored() -> None:
    event = call_event("acme", T0)
    del event["payload"]["key_id"]
    with pytest.raises(EventError, match="key_id"):
        read_call(event)
    assert read_call({**call_event("acme", T0), "event_type": "freeze_changed"}) is None


# ---- outputs -----------------------------------------------------------------------------------


def test_detection_outputs_are_valid_unified_events_with_stable_ids() -> None:
    from detection.outputs import alert_event, pattern_event
    from schemas.models import UnifiedEvent

    result = run(Detection(), _failures("acme", 3, T0))
    change = fired(result, "failure_pattern")[0]
    event = alert_event(change)
    assert event is not None and event == alert_event(change)
    parsed = UnifiedEvent.model_validate(event)
    assert parsed.event_type == "alert_fired" and parsed.tenant_id == "acme"
    assert uuid.UUID(parsed.event_id).version == 7
    assert parsed.payload["fingerprint"] == change.alert.fingerprint
    pattern = UnifiedEvent.model_validate(pattern_event(result.patterns[0]))
    assert pattern.event_type == "pattern_detected" and pattern.payload["identities"] == [
        "acme-k0",
        "acme-k1",
        "acme-k2",
    ]


def test_event_time_parsing_agrees_with_the_full_parser() -> None:
    from datetime import datetime

    from detection.calls import epoch_seconds

    for text in (
        "2026-05-28T12:00:00.123Z",
        "2026-05-28T12:00:00.999Z",
        "2026-05-28T12:00:01.000Z",
        "2026-05-28T12:00:01+02:00",
    ):
        assert epoch_seconds(text) == pytest.approx(datetime.fromisoformat(text).timestamp(), abs=1e-6)


# ---- settings ----------------------------------------------------------------------------------


def test_burn_rules_from_the_environment_and_a_clear_error_for_bad_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from detection.settings import DetectSettings, parse_rules
    from tokentrail.settings import ConfigError, load

    assert parse_rules("page:14.4:1h:5m,ticket:1:3d:6h") == (
        BurnRule("page", 14.4, 3600, 300),
        BurnRule("ticket", 1.0, 3 * 86400, 6 * 3600),
    )
    monkeypatch.setenv("TOKENTRAIL_DETECT_BURN_RULES", "page:14.4:1h")
    monkeypatch.setenv("TOKENTRAIL_DETECT_PATTERN_IDENTITIES", "1")
    with pytest.raises(ConfigError) as problem:
        load(DetectSettings)
    assert "TOKENTRAIL_DETECT_BURN_RULES" in str(problem.value) and "severity:factor:long:short" in str(problem.value)
    assert "TOKENTRAIL_DETECT_PATTERN_IDENTITIES" in str(problem.value)
    monkeypatch.setenv("TOKENTRAIL_DETECT_BURN_RULES", "page:20:2h:10m")
    monkeypatch.setenv("TOKENTRAIL_DETECT_PATTERN_IDENTITIES", "4")
    config = DetectSettings().config()
    assert config.rules == (BurnRule("page", 20.0, 7200, 600),) and config.patterns.min_identities == 4


def test_when_every_model_fails_alike_only_the_tenant_alert_is_sent() -> None:
    events = steady("acme", T0, 3600, 2.0, model="gpt-4o") + steady("acme", T0 + 1, 3600, 2.0, model="o3")
    events += steady("acme", T0 + 3600, 1800, 2.0, bad_every=2, model="o3")  # both at 50%
    events += steady("acme", T0 + 3601, 1800, 2.0, bad_every=2, model="gpt-4o")
    events.sort(key=lambda event: event["timestamp"])
    pages = fired(run(Detection(), events), "error_budget_burn")
    assert [c.alert.scope for c in pages] == ["tenant"]
