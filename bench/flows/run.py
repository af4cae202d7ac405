"""Benchmark of the enrich flow on a real broker and the embedded ClickHouse.

    .venv/bin/python bench/flows/run.py [--calls 200000] [--identities 100000] [--active 5000]
                                        [--fresh-rate 1000] [--fresh-seconds 20] [--workers 1]

One run, on a private TOKENTRAIL_HOME and broker (`tokentrail.broker.server.up`):
  (a) baseline: raw consume rate of the calls topic with confluent-kafka (consume, nothing else);
  (b) flow: sustained calls/s of `tokentrail flows` (verify, identity join, pricing, Kafka events,
      ClickHouse rows), counted from the first row visible until the row count equals the input
      (so process start-up and migrations are not counted);
  (c) freshness at a steady produce rate: each call's `received_at` is its produce time; a row
      is "visible" at the first poll (every 100 ms, through the flow's query server) that
      returns it, so figures include up to one poll interval;
  (d) RSS of the flow process with all identities in its join state: VmRSS, its anonymous and
      file-backed parts, and the peak (VmHWM).
Prints each figure and the ratio of (b) to (a); both run on the same shared machine.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from schemas import signing  # noqa: E402
from schemas.ids import new_id  # noqa: E402
from schemas.models import Actor, Identity, format_timestamp  # noqa: E402
from tokentrail import topics  # noqa: E402
from tokentrail.broker.admin import bulk_producer, produce_all  # noqa: E402
from tokentrail.broker.server import free_port, stop_broker, up  # noqa: E402
from tokentrail.control.records import encode  # noqa: E402
from tokentrail.processes import stop_process  # noqa: E402
from tokentrail.storage import StorageSettings  # noqa: E402
from tokentrail.storage.query_server import find_query_server  # noqa: E402

KEY = b"bench-signing-key-0123456789abcdef"
OPERATOR_KEY = b"bench-operator-key-0123456789abcdef"
PREFIX = "bench."


def make_identities(count: int) -> list[Identity]:
    """A human per 4 keys, with an agent and a sub-agent acting for each: chains 1-3 deep."""
    created = datetime(2026, 11, 1, tzinfo=UTC)
    out: list[Identity] = []
    while len(out) < count:
        n = len(out)
        tenant = f"tenant-{n % 97}"
        human = Identity(
            key_id=f"k{n}",
            key_hash="0" * 64,
            tenant_id=tenant,
            actor=Actor(type="human", id=f"user-{n}"),
            created_at=created,
        )
        agent = Identity(
            key_id=f"k{n + 1}",
            key_hash="0" * 64,
            tenant_id=tenant,
            actor=Actor(type="agent", id=f"agent-{n + 1}"),
            parent_key_id=human.key_id,
            ancestors=human.chain(),
            created_at=created,
        )
        sub = Identity(
            key_id=f"k{n + 2}",
            key_hash="0" * 64,
            tenant_id=tenant,
            actor=Actor(type="agent", id=f"sub-{n + 2}"),
            parent_key_id=agent.key_id,
            ancestors=agent.chain(),
            created_at=created,
        )
        other = Identity(
            key_id=f"k{n + 3}",
            key_hash="0" * 64,
            tenant_id=tenant,
            actor=Actor(type="system", id=f"job-{n + 3}"),
            created_at=created,
        )
        out += [human, agent, sub, other]
    return out[:count]


def call_record(who: Identity, rng: random.Random, at: datetime, gateway: str) -> bytes:
    prompt = rng.randint(50, 6000)
    if rng.random() < 0.3:
        provider, flavor, endpoint, model = "anthropic", "default", "/v1/messages", "claude-sonnet-4-20250514"
        usage = {
            "input_tokens": prompt,
            "output_tokens": rng.randint(1, 900),
            "cache_read_input_tokens": rng.randint(0, 4000),
            "cache_creation_input_tokens": rng.randint(0, 500),
        }
    else:
        provider, flavor, endpoint, model = "openai", "chat", "/v1/chat/completions", "gpt-4o-2024-08-06"
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": rng.randint(1, 900),
            "total_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": rng.randint(0, prompt), "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
    stamp = format_timestamp(at)
    record = {
        "kind": "call",
        "schema_version": 1,
        "call_id": new_id(),
        "gateway_id": gateway,
        "received_at": stamp,
        "first_byte_at": stamp,
        "completed_at": stamp,
        "tenant_id": who.tenant_id,
        "key_id": who.key_id,
        "chain": [
            {"key_id": link.key_id, "actor": {"type": link.actor.type, "id": link.actor.id}} for link in who.chain()
        ],
        "request_id": new_id(),
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "end_user": None,
        "session_id": None,
        "provider": provider,
        "api_flavor": flavor,
        "endpoint": endpoint,
        "requested_model": model,
        "served_model": model,
        "stream": False,
        "status": 200,
        "error_type": None,
        "error_code": None,
        "client_disconnected": False,
        "usage": usage,
        "latency_ms": 120.5,
        "ttft_ms": 40.0,
        "request_body": None,
        "response_body": None,
    }
    record["signature"] = signing.sign(record, KEY)
    return orjson.dumps(record)


def baseline_consume(bootstrap: str, topic: str, expected: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-baseline", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen = 0
    started = time.perf_counter()
    while seen < expected:
        seen += sum(1 for m in consumer.consume(10_000, 1.0) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return expected / elapsed


def memory(pid: int) -> str:
    """VmRSS, split into anonymous memory (the process's own heap) and file-backed pages
    (mostly the embedded engine's ~550 MB shared library, shared and reclaimable), and peak."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    mb = {name: int(fields[name].split()[0]) // 1024 for name in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}
    return f"{mb['VmRSS']} MB (anonymous {mb['RssAnon']} MB, file-backed {mb['RssFile']} MB; peak {mb['VmHWM']} MB)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--identities", type=int, default=100_000)
    parser.add_argument("--active", type=int, default=5000, help="identities that make calls")
    parser.add_argument("--fresh-rate", type=int, default=1000)
    parser.add_argument("--fresh-seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="tokentrail-bench-flows-"))
    flows = None
    try:
        handle, _, _ = up(home, port=free_port(), topic_prefix=PREFIX, die_with_parent=True)
        bootstrap = handle.bootstrap
        producer = bulk_producer(bootstrap)
        rng = random.Random(42)

        t = time.perf_counter()
        identities = make_identities(args.identities)
        produce_all(
            producer,
            PREFIX + topics.IDENTITIES,
            ((i.key_id.encode(), encode(i, signing.KeySet(OPERATOR_KEY))) for i in identities),
        )
        active = identities[: args.active]
        at = datetime(2026, 11, 28, 12, tzinfo=UTC)
        raw_topic = PREFIX + topics.CALLS_RAW
        records = []
        for n in range(args.calls):
            who = active[rng.randrange(len(active))]
            records.append((who.tenant_id.encode(), call_record(who, rng, at + timedelta(milliseconds=n), "bench")))
        produce_all(producer, raw_topic, records)
        del records
        print(
            f"setup: {args.identities} identities, {args.calls} signed calls from {args.active} of them "
            f"produced in {time.perf_counter() - t:.1f}s",
            flush=True,
        )

        baseline = baseline_consume(bootstrap, raw_topic, args.calls)
        print(f"(a) baseline raw consume (confluent-kafka):  {baseline:,.0f} records/s", flush=True)

        env = {
            **os.environ,
            "TOKENTRAIL_HOME": str(home),
            "TOKENTRAIL_KAFKA_BOOTSTRAP": bootstrap,
            "TOKENTRAIL_TOPIC_PREFIX": PREFIX,
            "TOKENTRAIL_SIGNING_KEY": KEY.decode(),
            "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY.decode(),
            "TOKENTRAIL_FLOWS_METRICS_PORT": str(free_port()),
        }
        env.pop("TOKENTRAIL_CLICKHOUSE_URL", None)
        log = (home / "flows.log").open("wb")
        flows = subprocess.Popen(
            [sys.executable, "-m", "tokentrail", "flows", "-w", str(args.workers)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        settings = StorageSettings(home=home)

        def count(where: str = "1") -> int:
            remote = find_query_server(settings)
            if remote is None or remote.pid != flows.pid:
                return -1
            return remote.query(f"SELECT count() AS n FROM llm_calls WHERE {where}")[0]["n"]

        first_seen = first_count = None
        seen = -1
        deadline = time.monotonic() + 1800
        while seen < args.calls and time.monotonic() < deadline:
            if flows.poll() is not None:
                raise SystemExit(f"flows exited: {(home / 'flows.log').read_text()[-2000:]}")
            seen = count()
            if seen > 0 and first_seen is None:
                first_seen, first_count = time.perf_counter(), seen
            time.sleep(0.25)
        done = time.perf_counter()
        rate = (seen - first_count) / (done - first_seen) if done > first_seen else float("nan")
        print(
            f"(b) flow, Kafka -> verify -> join -> price -> ClickHouse: {rate:,.0f} calls/s "
            f"({seen} rows; ratio to baseline {rate / baseline:.3f})",
            flush=True,
        )
        print(f"(d) flow RSS with {args.identities} identities in state: {memory(flows.pid)}", flush=True)

        # (c) freshness at a steady rate
        produced: dict[str, float] = {}
        visible: dict[str, float] = {}
        remote = find_query_server(settings)
        interval = 1.0 / args.fresh_rate
        start = time.time()
        next_send = time.perf_counter()
        last_poll = 0.0
        total = args.fresh_rate * args.fresh_seconds
        sent = 0
        while sent < total or (len(visible) < total and time.time() - start < args.fresh_seconds + 30):
            now = time.perf_counter()
            while sent < total and next_send <= now:
                who = active[rng.randrange(len(active))]
                wall = time.time()
                value = call_record(who, rng, datetime.fromtimestamp(wall, UTC), "fresh")
                call_id = orjson.loads(value)["call_id"]
                producer.produce(raw_topic, value, who.tenant_id.encode())
                produced[call_id] = int(wall * 1000) / 1000  # received_at has ms precision
                sent += 1
                next_send += interval
            producer.poll(0)
            if now - last_poll >= 0.1:
                last_poll = now
                pending = [produced[c] for c in produced if c not in visible]
                if pending:
                    since = datetime.fromtimestamp(min(pending), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                    rows = remote.query(
                        "SELECT call_id FROM llm_calls WHERE gateway_id = 'fresh' "
                        "AND timestamp >= {since:DateTime64(3, 'UTC')}",
                        {"since": since},
                    )
                    polled = time.time()
                    for row in rows:
                        visible.setdefault(row["call_id"], polled)
            time.sleep(0.0005)
        lags = sorted(visible[c] - produced[c] for c in visible)
        if lags:
            p50, p99 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            print(
                f"(c) freshness at {args.fresh_rate}/s for {args.fresh_seconds}s: p50 {p50:.2f}s, "
                f"p99 {p99:.2f}s, max {lags[-1]:.2f}s ({len(lags)}/{total} visible)",
                flush=True,
            )
        print(f"(d) flow RSS at the end: {memory(flows.pid)}", flush=True)
        return 0
    finally:
        if flows is not None:
            stop_process(flows, timeout=60)
        stop_broker(home)
        if args.keep:
            print(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
