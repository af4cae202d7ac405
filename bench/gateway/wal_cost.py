"""What the write-ahead log costs per record, measured where it is paid, in one run.

    .venv/bin/python bench/gateway/wal_cost.py [--records 50000] [--rounds 3]

The end-to-end benchmark (`run.py`) measures it as req/s and latency, which needs a quiet
core. This one isolates the log's own cost: `Delivery.submit` of real signed RawCalls
(~1.2 KB, as the gateway builds them) into a real Kafka broker, with the write-ahead log on
and off (`write_ahead=False`: straight to librdkafka, the behaviour before the log),
alternating rounds. Per record it prints the request-path time (wall time of `submit` on the
calling thread: what a request waits) and the process CPU time until Kafka acknowledged every
record (all threads: the delivery thread's success reports and retirements, librdkafka's
threads). The CPU time divided by the gateway's CPU time per request (run.py, ~120-190 µs)
is the share of throughput the log costs on a saturated core.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.delivery import Delivery, producer_config  # noqa: E402
from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.records import call_record, signed_bytes  # noqa: E402
from gateway.spool import Spool  # noqa: E402
from schemas.ids import new_id  # noqa: E402
from schemas.signing import KeySet  # noqa: E402
from tokentrail.broker.server import free_port, stop_broker, up  # noqa: E402
from tokentrail.topics import CALLS_RAW  # noqa: E402

PREFIX = "bench."
TOPIC = PREFIX + CALLS_RAW
KEY = KeySet(b"bench-signing-key-0123456789abcdef")


def records(count: int) -> list[bytes]:
    now = time.time()
    usage = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}
    chain = [{"key_id": "k_root", "actor": {"type": "human", "id": "alice"}}]
    return [
        signed_bytes(
            call_record(
                call_id=new_id(),
                gateway_id="bench:1",
                received_at=now,
                first_byte_at=now + 0.1,
                completed_at=now + 0.2,
                tenant_id="bench",
                key_id="k_root",
                chain=chain,
                request_id=new_id(),
                trace_id="0" * 32,
                end_user=None,
                session_id=None,
                provider="openai",
                api_flavor="chat",
                endpoint="/v1/chat/completions",
                requested_model="gpt-4o-mini",
                served_model="gpt-4o-mini-2024-07-18",
                stream=False,
                status=200,
                error_type=None,
                error_code=None,
                client_disconnected=False,
                usage=usage,
                latency_ms=200.0,
                ttft_ms=100.0,
                request_body=None,
                response_body=None,
            ),
            KEY,
        )
        for _ in range(count)
    ]


def one_round(
    bootstrap: str, spool_dir: Path, values: list[bytes], write_ahead: bool, rate: float, fsync_interval_s: float
) -> tuple[float, float, float]:
    """(median submit µs, mean submit µs, CPU µs per record until acknowledged). `rate`:
    records a second, one at a time (0: bursts of 500 every 50 ms)."""
    delivery = Delivery(
        producer_config({"bootstrap.servers": bootstrap}, 30_000, 20, write_ahead),
        TOPIC,
        Spool(spool_dir, fsync_interval_s=fsync_interval_s),
        GatewayMetrics(),
        write_ahead,
        sign_fallback=bytes,  # no streams here
    )
    delivery.start()
    try:
        timings = []
        cpu_start = time.process_time()
        due = time.perf_counter()
        for value in values:
            started = time.perf_counter()
            delivery.submit(b"bench", value)
            timings.append(time.perf_counter() - started)
            if rate:
                due += 1 / rate
                time.sleep(max(0.0, due - time.perf_counter()))
            elif len(timings) % 500 == 0:
                time.sleep(0.05)  # a request rate, not a burst: the queue never fills
        while len(delivery.producer) > 0 or (write_ahead and delivery.spool.records > 0):
            time.sleep(0.01)
        cpu = time.process_time() - cpu_start
    finally:
        delivery.stop()
    return statistics.median(timings) * 1e6, statistics.fmean(timings) * 1e6, cpu / len(values) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rate", type=float, default=0, help="records a second, one at a time, as requests come (default: bursts)"
    )
    parser.add_argument("--fsync-interval", type=float, default=0.005, help="group commit interval, seconds")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tokentrail-bench-wal-"))
    try:
        handle, _, _ = up(workdir / "kafka", port=free_port(), topic_prefix=PREFIX, die_with_parent=True)
        values = records(args.records)
        results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        for round_number in range(args.rounds):
            for write_ahead in (False, True):
                spool_dir = workdir / f"spool-{round_number}-{write_ahead}"
                results[write_ahead].append(
                    one_round(handle.bootstrap, spool_dir, values, write_ahead, args.rate, args.fsync_interval)
                )
        print(f"{args.records} signed RawCalls of {len(values[0])} bytes per round, {args.rounds} rounds each")
        print(f"{'mode':<10} {'submit p50 µs':>14} {'submit mean µs':>15} {'CPU µs/record':>14}")
        for write_ahead in (False, True):
            rows = results[write_ahead]
            print(
                f"{'wal' if write_ahead else 'no-wal':<10} {statistics.median(r[0] for r in rows):14.2f} "
                f"{statistics.median(r[1] for r in rows):15.2f} {statistics.median(r[2] for r in rows):14.2f}"
            )
        added_p50 = statistics.median(r[0] for r in results[True]) - statistics.median(r[0] for r in results[False])
        added_cpu = statistics.median(r[2] for r in results[True]) - statistics.median(r[2] for r in results[False])
        print(
            f"write-ahead log adds {added_p50:.2f} µs to the request path (p50) and {added_cpu:.2f} µs CPU per "
            f"record: {added_cpu / 150 * 100:.1f}% of a gateway request at 150 µs CPU"
        )
        return 0
    finally:
        stop_broker(workdir / "kafka")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
