"""Insert rate into the embedded store: rows/s for 10k-row JSONEachRow batches into
`llm_calls` with its nine materialized views, against a baseline in the same run: the same
rows into a copy of llm_calls with no views (the machine is shared, so the ratio is the
stable figure).

    .venv/bin/python bench/storage/insert_rate.py [--batches 10] [--batch-size 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from tokentrail.storage import StorageSettings, migrate
from tokentrail.storage.embedded import EmbeddedStore


def call_rows(count: int) -> list[dict]:
    """Realistic variety: 5 tenants, 50 identities, 60 minutes, 10% failed, 1 in 7 unpriced."""
    rows = []
    for i in range(count):
        priced = i % 7 != 0
        rows.append(
            {
                "call_id": str(uuid.uuid4()),
                "timestamp": f"2026-03-01 10:{i % 60:02d}:{i % 57:02d}.123",
                "completed_at": "2026-03-01 10:59:59.000",
                "tenant_id": f"tenant-{i % 5}",
                "key_id": f"key-{i % 50}",
                "actor_type": "agent",
                "actor_id": f"agent-{i % 50}",
                "root_key_id": f"key-{i % 5}",
                "root_actor_type": "human",
                "root_actor_id": f"human-{i % 5}",
                "chain_key_ids": [f"key-{i % 5}", f"key-{i % 50}"],
                "chain_actors": [f"human:human-{i % 5}", f"agent:agent-{i % 50}"],
                "identity_known": True,
                "provider": "openai",
                "api_flavor": "chat",
                "endpoint": "/v1/chat/completions",
                "requested_model": "gpt-4o",
                "model": "gpt-4o-2024-08-06" if i % 3 else "gpt-4o-mini",
                "stream": i % 2 == 0,
                "status": 500 if i % 10 == 0 else 200,
                "failed": i % 10 == 0,
                "error_type": "server_error" if i % 10 == 0 else "",
                "error_code": "",
                "client_disconnected": False,
                "input_tokens": 1200 + i % 100,
                "output_tokens": 300,
                "cache_read_tokens": 200,
                "cache_write_tokens": 0,
                "reasoning_tokens": 0,
                "input_cost_usd": Decimal("0.003") if priced else None,
                "output_cost_usd": Decimal("0.003") if priced else None,
                "cost_usd": Decimal("0.006") if priced else None,
                "unpriced": not priced,
                "latency_ms": 812.5,
                "ttft_ms": 95.0 if i % 2 == 0 else None,
                "request_id": f"req-{i}",
                "trace_id": "",
                "end_user": "",
                "session_id": "",
                "gateway_id": "gw-1",
            }
        )
    return rows


def rate(store: EmbeddedStore, table: str, batches: list[list[dict]]) -> float:
    started = time.perf_counter()
    for number, batch in enumerate(batches):
        store.insert_rows(table, batch, dedup_token=f"{table}-{number}")
    return sum(map(len, batches)) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        store = EmbeddedStore(Path(home) / "clickhouse")
        migrate(store, StorageSettings(home=Path(home)))
        store.command("CREATE TABLE llm_calls_no_views AS llm_calls")
        rate(store, "llm_calls_no_views", [call_rows(1000)])  # warm-up
        baseline = rate(store, "llm_calls_no_views", [call_rows(args.batch_size) for _ in range(args.batches)])
        with_views = rate(store, "llm_calls", [call_rows(args.batch_size) for _ in range(args.batches)])
        rows = store.query("SELECT count() AS n FROM llm_calls")[0]["n"]
        rolled = store.query("SELECT sum(calls) AS n FROM cost_by_identity_1m")[0]["n"]
        store.close()
    assert rows == rolled == args.batches * args.batch_size
    print(f"baseline (llm_calls, no views): {baseline:,.0f} rows/s")
    print(f"llm_calls + 9 materialized views: {with_views:,.0f} rows/s  ({with_views / baseline:.2f}x baseline)")


if __name__ == "__main__":
    main()
