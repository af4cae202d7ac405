"""The enrich flow in one process without Kafka: where its time goes.

    .venv/bin/python bench/flows/inprocess.py [--calls 100000] [--store embedded|null] [--profile out.prof]

Signed RawCalls (the same mix as `run.py`) go through `build_flow` on a `TestingSource`
(2,000-record batches, like a Kafka poll), events to a discarding sink, rows to the real
embedded ClickHouse (migrated, in a temporary home, sink journal included) or to a null store. Prints calls/s;
`--store null` against `embedded` separates our Python from the storage work.
"""

from __future__ import annotations

import argparse
import cProfile
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "flows"))

from bytewax.connectors.kafka import KafkaSourceMessage  # noqa: E402
from bytewax.outputs import DynamicSink, StatelessSinkPartition  # noqa: E402
from bytewax.testing import TestingSource, run_main  # noqa: E402
from run import KEY, OPERATOR_KEY, call_record, make_identities  # noqa: E402

from flows.cli import tune_gc  # noqa: E402
from flows.clickhouse import ClickHouseSink  # noqa: E402
from flows.connectors import SINK_PARTITIONS  # noqa: E402
from flows.enrich import TABLES, TopicNames, build_flow  # noqa: E402
from flows.settings import FlowSettings  # noqa: E402
from schemas.signing import KeySet  # noqa: E402
from tokentrail.control.records import encode  # noqa: E402
from tokentrail.storage import LockedStore  # noqa: E402


class _Discard(StatelessSinkPartition):
    def write_batch(self, items: list) -> None:
        pass


class DiscardSink(DynamicSink):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard()


class NullStore:
    def __init__(self) -> None:
        self.rows = 0

    def insert_json_lines(self, table: str, body: bytes, dedup_token: str | None = None) -> None:
        self.rows += body.count(b"\n") if table == "llm_calls" else 0

    def existing_ids(self, table: str, column: str, ids: list[str]) -> set[str]:
        return set()

    def query(self, sql: str, parameters: dict | None = None) -> list[dict]:
        return [{"n": 0}]  # the sink's "does the table hold rows": never


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--identities", type=int, default=5000)
    parser.add_argument("--store", choices=("embedded", "null"), default="embedded")
    parser.add_argument("--profile", help="write a cProfile of the run to this file")
    args = parser.parse_args()

    rng = random.Random(7)
    identities = make_identities(args.identities)
    start = datetime.now(UTC) - timedelta(hours=1)
    calls = [
        call_record(rng.choice(identities), rng, start + timedelta(milliseconds=i), "gw-bench")
        for i in range(args.calls)
    ]
    raw = [
        KafkaSourceMessage(key=b"t", value=value, topic="raw", partition=0, offset=i) for i, value in enumerate(calls)
    ]
    known = [
        KafkaSourceMessage(
            key=x.key_id.encode(), value=encode(x, KeySet(OPERATOR_KEY)), topic="identities", partition=0, offset=i
        )
        for i, x in enumerate(identities)
    ]

    with tempfile.TemporaryDirectory() as home:
        if args.store == "embedded":
            from tokentrail.storage import StorageSettings, migrate
            from tokentrail.storage.embedded import EmbeddedStore

            store = EmbeddedStore(Path(home) / "clickhouse")
            migrate(store, StorageSettings(home=Path(home)))
        else:
            store = NullStore()
        settings = FlowSettings()
        flow = build_flow(
            raw=TestingSource(raw, batch_size=2000),
            identities=TestingSource(known, batch_size=2000),
            kafka_out=DiscardSink(),
            clickhouse_out=ClickHouseSink(
                LockedStore(store), TABLES, settings, Path(home) / "flows-journal"
            ),  # as `tokentrail flows`
            signing_key=KEY,
            operator_keys=KeySet(OPERATOR_KEY),
            names=TopicNames("raw", "identities", "events", "dlq"),
            settings=settings,
            ticks=TestingSource([(str(i), None) for i in range(SINK_PARTITIONS)]),
        )
        tune_gc()  # as `tokentrail flows` does
        profiler = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        run_main(flow)
        elapsed = time.perf_counter() - started
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        if args.store == "embedded":
            stored = store.query("SELECT count() AS n FROM llm_calls")[0]["n"]
            store.close()
        else:
            stored = store.rows
    assert stored == args.calls, (stored, args.calls)
    peak = next(
        line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    print(
        f"{args.store} store: {args.calls / elapsed:,.0f} calls/s ({args.calls:,} calls in {elapsed:.2f} s), "
        f"peak RSS {int(peak) // 1024} MB (the input included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
