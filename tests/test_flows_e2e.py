"""End to end on the real broker and the embedded ClickHouse: `tokentrail flows` in a
subprocess turns signed calls into exactly one row each, with the right owner and cost,
routes bad records to the DLQ, and survives kill -9 without losing or doubling anything."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from genai_prices import calc_price, extract_usage

from schemas import wire
from schemas.models import Actor
from tests.fixtures.flows import (
    ANTHROPIC_USAGE,
    OPERATOR_KEY,
    ORG,
    SIGNING_KEY,
    T0,
    _identity,
    anthropic_call,
    identity_bytes,
    make_call,
    sign_dict,
    signed_bytes,
)
from tests.fixtures.kafka import consume_all
from tokentrail import topics
from tokentrail.broker.admin import produce_all
from tokentrail.broker.server import free_port
from tokentrail.storage import StorageSettings, open_store
from tokentrail.storage.query_server import find_query_server

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def population(tenants: int = 3):
    """Per tenant: two humans, an agent for each, and a sub-agent under the first agent."""
    identities = list(ORG)
    for t in range(tenants):
        tenant = f"tenant-{t}"
        for h in range(2):
            human = _identity(f"k_{t}_h{h}", tenant, Actor(type="human", id=f"human-{t}-{h}"))
            agent = _identity(f"k_{t}_a{h}", tenant, Actor(type="agent", id=f"agent-{t}-{h}"), human)
            identities += [human, agent]
            if h == 0:
                identities.append(_identity(f"k_{t}_s", tenant, Actor(type="agent", id=f"sub-{t}"), agent))
    return identities


def calls_for(identities, count: int, seed: int = 7):
    rng = random.Random(seed)
    calls = []
    for index in range(count):
        who = rng.choice(identities)
        at = T0.replace(minute=index % 50)
        if rng.random() < 0.3:
            usage = dict(ANTHROPIC_USAGE, input_tokens=rng.randint(1, 900))
            calls.append(anthropic_call(who, usage=usage, received_at=at))
        else:
            prompt = rng.randint(10, 5000)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": rng.randint(1, 800),
                "prompt_tokens_details": {"cached_tokens": rng.randint(0, prompt)},
            }
            calls.append(make_call(who, usage=usage, received_at=at))
    return calls


def expected_cost(call) -> Decimal:
    """genai-prices on its own, quantized like the Decimal(20,10) column."""
    extracted = extract_usage(
        {"model": call.served_model, "usage": call.usage}, provider_id=call.provider, api_flavor=call.api_flavor
    )
    price = calc_price(extracted.usage, call.served_model, provider_id=call.provider)
    return price.total_price.quantize(Decimal("1E-10"))


def produce(bootstrap: str, topic: str, records) -> None:
    produce_all(Producer({"bootstrap.servers": bootstrap, "linger.ms": 20}), topic, records, timeout=30)


class FlowsProcess:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.process: subprocess.Popen | None = None
        self.log = home / "flows.log"

    def start(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokentrail", "flows", *args],
            env=self.env,
            cwd=ROOT,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)

    def count(self, table: str = "llm_calls") -> int:
        """Rows so far, through the flows process's query server (never opening the store here,
        which would take it from the flows); -1 until that server answers."""
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        remote = find_query_server(StorageSettings(home=self.home))
        if remote is None or remote.pid != self.process.pid:
            return -1
        return remote.query(f"SELECT count() AS n FROM {table}")[0]["n"]

    def wait_for(self, table: str, expected: int, timeout: float = 90.0) -> int:
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            seen = self.count(table)
            if seen >= expected:
                return seen
            time.sleep(0.2)
        return seen


@pytest.fixture
def flows_env(tmp_path, kafka_topics):
    env = {
        **os.environ,
        **kafka_topics.env,
        "TOKENTRAIL_HOME": str(tmp_path),
        "TOKENTRAIL_SIGNING_KEY": SIGNING_KEY.decode(),
        "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY.decode(),
        "TOKENTRAIL_FLOWS_METRICS_PORT": str(free_port()),
        "TOKENTRAIL_FLOWS_SNAPSHOT_SECONDS": "1",
        "TOKENTRAIL_CLICKHOUSE_URL": "",
    }
    env.pop("TOKENTRAIL_CLICKHOUSE_URL")
    return env


def query_embedded(home: Path, sql: str, parameters: dict | None = None) -> list[dict]:
    store = open_store(StorageSettings(home=home))
    try:
        return store.query(sql, parameters)
    finally:
        store.close()


def test_signed_calls_become_rows_with_owner_root_and_cost_and_bad_records_go_to_the_dlq(
    tmp_path, kafka_topics, flows_env
):
    identities = population()
    produce(
        kafka_topics.bootstrap,
        kafka_topics.name(topics.IDENTITIES),
        [(i.key_id.encode(), identity_bytes(i)) for i in identities],
    )
    calls = calls_for(identities, 400)
    forged = orjson.dumps(sign_dict(wire.to_dict(make_call()), key=b"not-the-key"))
    truncated = signed_bytes(make_call())[:100]
    broken = wire.to_dict(make_call())
    broken["status"] = "teapot"
    bad = [truncated, signed_bytes(broken), forged]
    records = [(c.tenant_id.encode(), signed_bytes(c)) for c in calls[:200]]
    records += [(b"acme", value) for value in bad]
    records += [(c.tenant_id.encode(), signed_bytes(c)) for c in calls[200:]]
    produce(kafka_topics.bootstrap, kafka_topics.name(topics.CALLS_RAW), records)

    flows = FlowsProcess(tmp_path, flows_env)
    flows.start()
    try:
        assert flows.wait_for("llm_calls", len(calls)) == len(calls), flows.log.read_text()[-3000:]
        assert flows.wait_for("events", len(calls)) == len(calls)
        dead = consume_all(kafka_topics.bootstrap, kafka_topics.name(topics.DLQ), expected=3, timeout=30)
        events = consume_all(kafka_topics.bootstrap, kafka_topics.name(topics.EVENTS), expected=len(calls), timeout=30)
        port = flows_env["TOKENTRAIL_FLOWS_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            assert reply.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            exposition = reply.read().decode()
        assert 'tokentrail_flows_rejected_total{reason="signature"} 1.0' in exposition
        assert f'tokentrail_flows_rows_written_total{{table="llm_calls"}} {float(len(calls))}' in exposition
        timeline = subprocess.run(
            [
                sys.executable,
                "-m",
                "tokentrail",
                "events",
                "--tenant",
                "acme",
                "--since",
                "2026-11-28T00:00Z",
                "--until",
                "2026-11-29T00:00Z",
                "--format",
                "jsonl",
                "--limit",
                "100000",
            ],
            env=flows_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert timeline.returncode == 0, timeline.stderr
    finally:
        flows.kill(signal.SIGTERM)
    assert flows.process.returncode in (0, 130), flows.log.read_text()[-3000:]

    letters = sorted((orjson.loads(m.value()) for m in dead), key=lambda d: d["reason"])
    assert [d["reason"].split(":")[0] for d in letters] == ["invalid JSON", "schema", "signature"]
    assert "status" in letters[1]["reason"]
    assert all(m.key() == b"acme" for m in dead)
    # each dead letter keeps the exact bytes of its record (reasons sort as truncated, broken, forged)
    assert [(d["encoding"], d["original"].encode()) for d in letters] == [("utf-8", value) for value in bad]
    assert [d["topic"] for d in letters] == [kafka_topics.name(topics.CALLS_RAW)] * 3
    assert {m.key() for m in events} == {c.tenant_id.encode() for c in calls}

    rows = {r["call_id"]: r for r in query_embedded(tmp_path, "SELECT * FROM llm_calls")}
    assert len(rows) == len(calls)
    by_key = {i.key_id: i for i in identities}
    for call in calls:
        row = rows[call.call_id]
        chain = by_key[call.key_id].chain()
        assert (row["tenant_id"], row["actor_id"]) == (call.tenant_id, chain[-1].actor.id)
        assert (row["root_actor_type"], row["root_actor_id"]) == (chain[0].actor.type, chain[0].actor.id)
        assert row["cost_usd"] == expected_cost(call), call.call_id
    total = query_embedded(tmp_path, "SELECT sum(cost_usd) AS s FROM llm_calls")[0]["s"]
    assert total == sum(expected_cost(c) for c in calls)

    # `tokentrail events` (the storage CLI, through the flow's query server) gives every call
    # of the tenant as a UnifiedEvent, in (timestamp, event_id) order
    listed = [orjson.loads(line) for line in timeline.stdout.splitlines()]
    acme = sorted((wire.to_dict(c)["received_at"], c.call_id) for c in calls if c.tenant_id == "acme")
    assert [(e["timestamp"], e["event_id"]) for e in listed] == acme
    assert all(e["event_type"] == "llm_call" and e["event_source"] == "flows" for e in listed)


def test_kill_9_mid_stream_then_restart_loses_and_doubles_nothing(tmp_path, kafka_topics, flows_env):
    identities = population()
    produce(
        kafka_topics.bootstrap,
        kafka_topics.name(topics.IDENTITIES),
        [(i.key_id.encode(), identity_bytes(i)) for i in identities],
    )
    first, second = calls_for(identities, 6000, seed=1), calls_for(identities, 3000, seed=2)
    raw = kafka_topics.name(topics.CALLS_RAW)
    produce(kafka_topics.bootstrap, raw, [(c.tenant_id.encode(), signed_bytes(c)) for c in first])

    # small polls, so rows arrive in several INSERTs and the kill lands between them
    small = {"TOKENTRAIL_FLOWS_KAFKA_BATCH": "500"}
    flows = FlowsProcess(tmp_path, {**flows_env, **small})
    flows.start()
    try:
        flows.wait_for("llm_calls", 1)
        flows.kill(signal.SIGKILL)
        # mid-stream: the kill came after some rows were written and before all of them
        written_at_kill = query_embedded(tmp_path, "SELECT count() AS n FROM llm_calls")[0]["n"]
        assert 0 < written_at_kill < len(first), (written_at_kill, flows.log.read_text()[-3000:])
        produce(kafka_topics.bootstrap, raw, [(c.tenant_id.encode(), signed_bytes(c)) for c in second])
        flows.start("--flow", "enrich")  # the default flow by name resumes the same state
        total = len(first) + len(second)
        assert flows.wait_for("llm_calls", total, timeout=240) == total, flows.log.read_text()[-3000:]
        assert flows.wait_for("events", total, timeout=240) == total
        time.sleep(2)  # anything doubled would show up by now
    finally:
        flows.kill(signal.SIGTERM)

    calls = first + second
    base = query_embedded(tmp_path, "SELECT count() AS n, uniqExact(call_id) AS u, sum(cost_usd) AS s FROM llm_calls")[
        0
    ]
    assert base == {"n": len(calls), "u": len(calls), "s": sum(expected_cost(c) for c in calls)}
    assert query_embedded(tmp_path, "SELECT count() AS n FROM events")[0]["n"] == len(calls)
    by_tenant = query_embedded(
        tmp_path,
        "SELECT tenant_id, count() AS calls, sum(cost_usd) AS cost FROM llm_calls GROUP BY tenant_id ORDER BY tenant_id",
    )
    rollup = query_embedded(
        tmp_path,
        "SELECT tenant_id, sum(calls) AS calls, sum(cost_usd) AS cost FROM cost_by_tenant_1m "
        "GROUP BY tenant_id ORDER BY tenant_id",
    )
    assert rollup == by_tenant


def every_table(flows: FlowsProcess) -> dict[str, list]:
    """Every table's rows, merged as its engine merges them (FINAL), in a stable order."""
    remote = find_query_server(StorageSettings(home=flows.home))
    tables = remote.query(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree'"
    )
    out = {}
    for table in tables:
        final = " FINAL" if table["engine"] != "MergeTree" else ""
        rows = remote.query(f"SELECT * FROM `{table['name']}`{final}")
        out[table["name"]] = sorted(repr(sorted(row.items())) for row in rows)
    return out


def duplicates_dropped(flows_env) -> float:
    port = flows_env["TOKENTRAIL_FLOWS_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith('tokentrail_flows_duplicates_dropped_total{table="llm_calls"}')
    )


def wait_dropped(flows: FlowsProcess, flows_env, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if duplicates_dropped(flows_env) >= count:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the duplicate was not seen: {flows.log.read_text()[-3000:]}")


def test_the_same_signed_call_again_later_and_after_a_restart_changes_no_row_cost_or_rollup(
    tmp_path, kafka_topics, flows_env
):
    """Invariant: counted once. The same signed RawCall produced again with a Kafka timestamp
    an hour later (an operator re-producing it, no redelivery mark), and again after the flows
    restarted (long after any replay window): the base table, every rollup and `report cost`
    are what they were."""
    identities = population()
    produce(
        kafka_topics.bootstrap,
        kafka_topics.name(topics.IDENTITIES),
        [(i.key_id.encode(), identity_bytes(i)) for i in identities],
    )
    calls = calls_for(identities, 300, seed=3)
    raw = kafka_topics.name(topics.CALLS_RAW)
    produce(kafka_topics.bootstrap, raw, [(c.tenant_id.encode(), signed_bytes(c)) for c in calls])
    again = calls[17]
    report = [sys.executable, "-m", "tokentrail", "report", "cost", "--by", "root", "--format", "jsonl"]

    def produce_again() -> None:
        producer = Producer({"bootstrap.servers": kafka_topics.bootstrap})
        an_hour_later = int(time.time() * 1000) + 3600 * 1000
        producer.produce(raw, signed_bytes(again), again.tenant_id.encode(), timestamp=an_hour_later)
        assert producer.flush(30) == 0

    flows = FlowsProcess(tmp_path, flows_env)
    flows.start()
    try:
        assert flows.wait_for("llm_calls", len(calls)) == len(calls), flows.log.read_text()[-3000:]
        assert flows.wait_for("events", len(calls)) == len(calls)
        time.sleep(1.5)  # past a snapshot: the later copy is no replay
        before = every_table(flows)
        spend = subprocess.run(report, env=flows_env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert spend.strip()
        produce_again()
        wait_dropped(flows, flows_env, 1)
        assert every_table(flows) == before
        flows.kill(signal.SIGTERM)
        produce_again()
        flows.start()
        assert flows.wait_for("llm_calls", len(calls)) == len(calls)
        wait_dropped(flows, flows_env, 1)
        assert every_table(flows) == before
        after = subprocess.run(report, env=flows_env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert after == spend
    finally:
        flows.kill(signal.SIGTERM)
