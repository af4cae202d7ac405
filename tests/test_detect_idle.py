"""Alerts of a state that gets no events at all resolve: `Detector.idle` / `ProviderIncidents.idle`
(event time moved on by quiet wall-clock seconds) and the detect flow's `QuietClock`."""

from __future__ import annotations

from detection.engine import Detection, Detector, ProviderIncidents, Result
from detection.synthetic import call_event
from flows.detect import (
    DETECT_BUCKETS,
    SYSTEM_KEY,
    EventBatch,
    FailureBatch,
    IdleTick,
    IdleTicks,
    QuietClock,
    broadcast_tick,
)

T0 = 1_780_000_000.0


def outage(tenant: str, start: float, calls: int = 20) -> list[dict]:
    return [call_event(tenant, start + n, key_id=f"{tenant}-k{n % 2}", status=503) for n in range(calls)]


def paged(detector: Detector, events: list[dict]) -> Result:
    result = Result()
    for event in events:
        detector.observe(event, result)
    return result


def kinds(result: Result, tenant: str) -> list[tuple[str, str]]:
    return [(c.kind, c.alert.rule) for c in result.changes if c.alert.tenant_id == tenant and c.kind != "updated"]


def test_a_quiet_tenants_page_resolves_once_idle_time_passes_the_clear_delay() -> None:
    detector = Detector()
    assert ("fired", "error_budget_burn") in kinds(paged(detector, outage("acme", T0)), "acme")
    idle = Result()
    detector.idle(1000, idle)  # the 30 m window of the 6 h / 30 m page pair still holds the failures
    assert kinds(idle, "acme") == []
    detector.idle(1900, idle)  # clear since then ...
    assert kinds(idle, "acme") == []
    detector.idle(1900 + 300, idle)  # ... for the clear delay (300 s): resolved, once
    detector.idle(3000, idle)
    resolved = [c for c in idle.changes if c.kind == "resolved"]
    assert [(c.alert.tenant_id, c.alert.rule, c.alert.scope) for c in resolved] == [
        ("acme", "error_budget_burn", "tenant")
    ]
    assert resolved[0].alert.ends_at is not None and resolved[0].alert.ends_at.timestamp() == T0 + 19 + 2200
    assert detector.newest == T0 + 19, "idle time is not event time: nothing else moves"


def test_idle_time_never_resolves_a_condition_that_still_holds() -> None:
    detector = Detector()
    paged(detector, outage("acme", T0, calls=600))  # ten minutes of outage
    idle = Result()
    detector.idle(30, idle)  # 30 s later the 5 m window is still full of failures
    assert kinds(idle, "acme") == []
    assert detector.book.is_firing("acme", "error_budget_burn", "tenant")


def test_a_provider_incident_resolves_when_failures_stop_everywhere() -> None:
    detection = Detection()
    failures = [
        call_event(tenant, T0 + 20 * n + i, key_id=f"{tenant}-k", status=502, error_type="upstream_error")
        for n in range(2)
        for i, tenant in enumerate("abc")
    ]
    result = Result()
    for event in failures:
        result.extend(detection.observe(event))
    incidents: ProviderIncidents = detection.incidents
    assert [c.kind for c in result.changes if c.alert.rule == "provider_incident"] == ["fired"]
    idle = Result()
    for seconds in (300, 600, 900, 1200):  # the 10 m window empties, then the clear delay passes
        incidents.idle(seconds, idle)
    assert [c.kind for c in idle.changes if c.alert.rule == "provider_incident" and c.notifies] == ["resolved"]


def test_the_quiet_clock_counts_from_the_first_tick_after_the_last_event() -> None:
    clock = QuietClock()
    events = EventBatch([])
    assert clock.quiet_for([IdleTick(100.0)]) is None  # first quiet tick: starts counting
    assert clock.quiet_for([IdleTick(110.0)]) == 10.0
    assert clock.quiet_for([IdleTick(130.0), IdleTick(140.0)]) == 40.0
    assert clock.quiet_for([IdleTick(150.0), events]) is None  # an event: not quiet
    assert clock.quiet_for([FailureBatch([], {})]) is None
    assert clock.quiet_for([IdleTick(160.0)]) is None
    assert clock.quiet_for([IdleTick(170.0)]) == 10.0


def test_a_tick_reaches_every_bucket_and_the_system_state() -> None:
    ticks = broadcast_tick(123.0)
    assert [key for key, _ in ticks] == [str(b) for b in range(DETECT_BUCKETS)] + [SYSTEM_KEY]
    assert {tick for _, tick in ticks} == {IdleTick(123.0)}


def test_idle_ticks_ride_on_one_sink_tick_per_round_at_their_own_interval() -> None:
    every_round = IdleTicks(interval=0)
    assert every_round(("1", None)) == [] and every_round(("2", None)) == []  # other sink partitions
    ticks = every_round(("0", None))
    assert len(ticks) == DETECT_BUCKETS + 1 and ticks[-1][0] == SYSTEM_KEY
    hourly = IdleTicks(interval=3600)
    assert hourly(("0", None)) == []  # not due yet
