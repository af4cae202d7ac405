"""Benchmark: `tokentrail mock-upstream` against a plain aiohttp server, same route, same bytes.

    .venv/bin/python bench/mock_upstream/run.py [--duration 10] [--connections 64]

Each server runs pinned to core 0 (taskset -c 0), wrk to core 1 (taskset -c 1 wrk -t1 -c64),
non-streaming chat completions over loopback. The machine is shared, so absolute numbers are
noisy: the ratio mock/aiohttp from the same run is the figure to compare. Installs wrk with
apt-get when missing. Exits 1 when wrk saw errors or non-2xx answers.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mock_upstream.process import spawn_mock_upstream  # noqa: E402
from tokentrail.broker.server import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
SERVER_CORE, CLIENT_CORE = "0", "1"
TARGET_RPS = 20_000


@dataclass
class WrkResult:
    requests_per_second: float
    latency_avg_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    requests: int
    problems: str


def ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def run_wrk(url: str, duration: int, connections: int) -> WrkResult:
    command = [
        "taskset",
        "-c",
        CLIENT_CORE,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(HERE / "post.lua"),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 30).stdout
    problems = "; ".join(
        line.strip() for line in out.splitlines() if line.strip().startswith(("Socket errors", "Non-2xx"))
    )
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        latency_avg_ms=_ms(re.search(r"Latency\s+(\S+)", out).group(1)),
        latency_p50_ms=_ms(re.search(r"50%\s+(\S+)", out).group(1)),
        latency_p99_ms=_ms(re.search(r"99%\s+(\S+)", out).group(1)),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),
        problems=problems,
    )


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def bench_mock(duration: int, connections: int) -> WrkResult:
    mock = spawn_mock_upstream(prefix=["taskset", "-c", SERVER_CORE])
    try:
        return run_wrk(mock.url, duration, connections)
    finally:
        mock.stop()


def bench_aiohttp(duration: int, connections: int) -> WrkResult:
    port = free_port()
    command = ["taskset", "-c", SERVER_CORE, sys.executable, str(HERE / "aiohttp_baseline.py"), "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server)
        return run_wrk(url, duration, connections)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1.0):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise SystemExit(f"aiohttp baseline at {url} did not come up (exit code {server.poll()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    args = parser.parse_args()
    ensure_wrk()
    results = {
        "mock-upstream": bench_mock(args.duration, args.connections),
        "aiohttp": bench_aiohttp(args.duration, args.connections),
    }
    print(
        f"non-streaming POST /v1/chat/completions, wrk -t1 -c{args.connections} -d{args.duration}s, "
        f"server on core {SERVER_CORE}, wrk on core {CLIENT_CORE}"
    )
    print(f"{'server':<15}{'req/s':>10}{'avg ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'requests':>11}")
    for name, r in results.items():
        print(
            f"{name:<15}{r.requests_per_second:>10.0f}{r.latency_avg_ms:>9.2f}{r.latency_p50_ms:>9.2f}"
            f"{r.latency_p99_ms:>9.2f}{r.requests:>11}"
        )
    mock, baseline = results["mock-upstream"], results["aiohttp"]
    print(
        f"ratio mock/aiohttp: {mock.requests_per_second / baseline.requests_per_second:.2f}x; "
        f"target {TARGET_RPS} req/s: {'met' if mock.requests_per_second >= TARGET_RPS else 'NOT met'}"
    )
    failed = [f"{name}: {r.problems}" for name, r in results.items() if r.problems]
    for line in failed:
        print(f"errors seen by wrk, {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
