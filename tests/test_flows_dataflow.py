"""The enrich dataflow on TestingSource/TestingSink: joins, prices, routes errors, and gives
the same result with two workers (keying mistakes show up there)."""

from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flows.clickhouse import ClickHouseSink
from flows.connectors import SINK_PARTITIONS
from flows.enrich import TABLES, TopicNames, build_flow
from flows.settings import FlowSettings
from schemas import wire
from schemas.models import Actor, EventContext, GatewayEvent, UnifiedEvent
from tests.fixtures.flows import (
    ALICE,
    BILLING,
    BOB,
    OPERATOR_KEYS,
    ORG,
    PLANNER,
    SEARCHER,
    SIGNING_KEY,
    T0,
    FakeStore,
    anthropic_call,
    identity_bytes,
    make_call,
    sign_dict,
    signed_bytes,
)

NAMES = TopicNames("raw", "identities", "events", "dlq")


def raw_message(value: bytes, offset: int, key: bytes = b"acme") -> KafkaSourceMessage:
    return KafkaSourceMessage(key=key, value=value, topic="raw", partition=0, offset=offset)


def identity_message(identity, offset: int) -> KafkaSourceMessage:
    return KafkaSourceMessage(
        key=identity.key_id.encode(), value=identity_bytes(identity), topic="identities", partition=0, offset=offset
    )


def run(raw_values, identities=ORG, workers=1, store=None):
    store = store or FakeStore()
    out: list = []
    flow = build_flow(
        raw=TestingSource([raw_message(v, i) for i, v in enumerate(raw_values)], batch_size=50),
        # identities first, then the calls: an EOF-ing TestingSource cannot wait for the join
        identities=TestingSource([identity_message(x, i) for i, x in enumerate(identities)], batch_size=50),
        kafka_out=TestingSink(out),
        clickhouse_out=ClickHouseSink(store, TABLES, FlowSettings(flows_batch_rows=7, flows_flush_ms=10_000)),
        signing_key=SIGNING_KEY,
        operator_keys=OPERATOR_KEYS,
        names=NAMES,
        settings=FlowSettings(),
        ticks=TestingSource([(str(i), None) for i in range(SINK_PARTITIONS)]),
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    messages = [m for _, batch in out for m in batch]
    return store, messages


def gateway_event() -> bytes:
    event = UnifiedEvent(
        event_id="0193-gw-event",
        event_type="protection_decision",
        event_source="gateway",
        tenant_id="acme",
        timestamp=T0,
        severity="WARN",
        actor=Actor(type="human", id="bob"),
        context=EventContext(request_id="r-gw"),
        payload={"decision": "frozen"},
    )
    return signed_bytes(GatewayEvent(event=event))


def mixed_input():
    calls = [make_call(who) for who in (ALICE, PLANNER, SEARCHER, BOB, BILLING) for _ in range(6)]
    calls += [anthropic_call(SEARCHER) for _ in range(4)]
    forged = orjson.dumps(sign_dict(wire.to_dict(make_call()), key=b"wrong"))
    truncated = signed_bytes(make_call())[:80]
    broken = wire.to_dict(make_call())
    del broken["request_id"]
    values = [signed_bytes(c) for c in calls[:10]] + [forged, truncated, signed_bytes(broken), gateway_event()]
    values += [signed_bytes(c) for c in calls[10:]]
    return calls, values


@pytest.mark.parametrize("workers", [1, 2])
def test_every_good_call_becomes_one_row_and_one_event_and_bad_ones_go_to_the_dlq(workers):
    calls, values = mixed_input()
    store, messages = run(values, workers=workers)
    rows = store.tables["llm_calls"]
    assert sorted(rows) == sorted(c.call_id for c in calls)
    searcher = next(r for r in rows.values() if r["actor_id"] == "searcher")
    assert (searcher["root_actor_type"], searcher["root_actor_id"]) == ("human", "alice")
    assert searcher["chain_key_ids"] == ["k_alice", "k_planner", "k_searcher"]
    assert all(r["identity_known"] for r in rows.values())
    assert {r["tenant_id"] for r in rows.values() if r["actor_id"] == "billing-job"} == {"globex"}
    assert sum(Decimal(r["cost_usd"]) for r in rows.values()) == (30 * Decimal("0.00575") + 4 * Decimal("0.00210"))

    events = {r["event_id"]: r for r in store.tables["events"].values()}
    assert set(events) == {c.call_id for c in calls} | {"0193-gw-event"}
    assert events["0193-gw-event"]["event_type"] == "protection_decision"

    by_topic: dict[str, list] = {}
    for topic, key, value, headers in messages:
        by_topic.setdefault(topic, []).append((key, orjson.loads(value), dict(headers)))
    assert len(by_topic["events"]) == len(calls) + 1
    assert all(key == value["tenant_id"].encode() for key, value, _ in by_topic["events"])
    reasons = sorted(value["reason"].split(":")[0] for _, value, _ in by_topic["dlq"])
    assert reasons == ["invalid JSON", "schema", "signature"]
    for key, value, headers in by_topic["dlq"]:
        assert key == b"acme" and value["topic"] == "raw" and value["offset"] in (10, 11, 12)
        assert headers["tokentrail-reason"].decode() == value["reason"]


def test_calls_of_unknown_keys_are_kept_and_flagged():
    call = make_call(SEARCHER)
    store, _ = run([signed_bytes(call)], identities=[])
    row = store.tables["llm_calls"][call.call_id]
    assert not row["identity_known"]
    assert (row["actor_id"], row["root_actor_id"], row["tenant_id"]) == ("searcher", "alice", "acme")


def test_a_replayed_stream_writes_nothing_twice():
    calls, values = mixed_input()
    store, _ = run(values)
    first = dict(store.tables["llm_calls"])
    store, _ = run(values, store=store)
    assert store.tables["llm_calls"] == first
    assert sum(n for table, n, _ in store.inserts if table == "llm_calls") == len(calls)


def test_bad_identity_records_go_to_the_dlq():
    out: list = []
    store = FakeStore()
    flow = build_flow(
        raw=TestingSource([]),
        identities=TestingSource(
            [KafkaSourceMessage(key=b"k_x", value=b"{nope", topic="identities", partition=1, offset=4)]
        ),
        kafka_out=TestingSink(out),
        clickhouse_out=ClickHouseSink(store, TABLES, FlowSettings()),
        signing_key=SIGNING_KEY,
        operator_keys=OPERATOR_KEYS,
        names=NAMES,
        settings=FlowSettings(),
        ticks=None,
    )
    run_main(flow, epoch_interval=timedelta(seconds=1))
    ((topic, key, value, _),) = [m for _, batch in out for m in batch]
    assert topic == "dlq" and key == b"k_x"
    assert orjson.loads(value)["reason"].startswith("identity k_x: not valid JSON")


def test_identity_records_without_the_operator_signature_go_to_the_dlq_and_are_not_applied():
    forged = ALICE.model_copy(update={"tenant_id": "globex"})
    unsigned = KafkaSourceMessage(key=b"k_alice", value=wire.dumps(forged), topic="identities", partition=0, offset=9)
    out: list = []
    store = FakeStore()
    flow = build_flow(
        raw=TestingSource([raw_message(signed_bytes(make_call(ALICE)), 0)]),
        identities=TestingSource([unsigned]),
        kafka_out=TestingSink(out),
        clickhouse_out=ClickHouseSink(store, TABLES, FlowSettings(flows_batch_rows=1)),
        signing_key=SIGNING_KEY,
        operator_keys=OPERATOR_KEYS,
        names=NAMES,
        settings=FlowSettings(),
        ticks=None,
    )
    run_main(flow, epoch_interval=timedelta(seconds=1))
    [dead] = [m for _, batch in out for m in batch if m[0] == "dlq"]
    assert "operator signature: record has no signature" in orjson.loads(dead[2])["reason"]
    [row] = store.tables["llm_calls"].values()
    assert row["tenant_id"] == "acme" and not row["identity_known"]  # from the signed call, not the forgery
