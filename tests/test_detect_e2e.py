"""The detect flow end to end: call events on a real Kafka topic -> `tokentrail flows --flow
detect` -> alerts on `tokentrail.alerts`, detection events on `tokentrail.events` and their
rows in the embedded ClickHouse."""

from __future__ import annotations

import time

import orjson
import pytest

from detection.synthetic import call_event
from tests.fixtures.kafka import consume_all
from tests.test_flows_e2e import FlowsProcess, flows_env, produce  # noqa: F401 (flows_env: a fixture)
from tokentrail import topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DETECTION_EVENTS = {"alert_fired", "alert_resolved", "pattern_detected"}


def test_four_identities_make_one_pattern_and_a_failing_tenant_pages(tmp_path, kafka_topics, flows_env) -> None:  # noqa: F811
    start = time.time() - 600
    failing = {"status": 502, "error_type": "upstream_error", "error_code": "bad_gateway"}
    events = [call_event("acme", start + n, key_id=f"acme-k{n % 4}", **failing) for n in range(12)]
    events += [call_event("solo", start + n, key_id="solo-k0", **failing) for n in range(30)]
    events += [call_event("down", start + n, key_id=f"down-k{n % 2}", status=503) for n in range(20)]
    events_topic = kafka_topics.name(topics.EVENTS)
    produce(kafka_topics.bootstrap, events_topic, [(e["tenant_id"].encode(), orjson.dumps(e)) for e in events])

    flows = FlowsProcess(tmp_path, flows_env)
    flows.start("--flow", "detect")
    try:
        deadline = time.monotonic() + 120
        detected: list[dict] = []
        pages: set[tuple[str, str]] = set()
        # Patterns and pages come from different state buckets (and topic partitions): wait for both.
        while time.monotonic() < deadline:
            records = consume_all(kafka_topics.bootstrap, events_topic, timeout=30)
            detected = [
                e for e in map(orjson.loads, (r.value() for r in records)) if e["event_type"] in DETECTION_EVENTS
            ]
            alerts = [
                orjson.loads(r.value()) for r in consume_all(kafka_topics.bootstrap, kafka_topics.name(topics.ALERTS))
            ]
            pages = {
                (a["tenant_id"], a["scope"])
                for a in alerts
                if a["rule"] == "error_budget_burn" and a["severity"] == "page"
            }
            four = any(e["event_type"] == "pattern_detected" and len(e["payload"]["identities"]) == 4 for e in detected)
            if four and ("down", "tenant") in pages:
                break
            time.sleep(0.5)
        patterns = [e for e in detected if e["event_type"] == "pattern_detected"]
        assert patterns, flows.log.read_text()[-3000:]
        assert {p["tenant_id"] for p in patterns} == {"acme"}  # "solo" failed thirty times alone
        assert len({p["payload"]["pattern_id"] for p in patterns}) == 1
        assert patterns[-1]["payload"]["identities"] == [f"acme-k{i}" for i in range(4)]
        assert ("down", "tenant") in pages, flows.log.read_text()[-3000:]
        assert all(
            r.key() == orjson.loads(r.value())["fingerprint"].encode()
            for r in consume_all(kafka_topics.bootstrap, kafka_topics.name(topics.ALERTS))
        )
        # the detection events reach the events table through the flow's own sink
        assert flows.wait_for("events", len(detected), timeout=60) == len(detected)
    finally:
        flows.kill()
