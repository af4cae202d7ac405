"""Gateway benchmark: wrk against the mock directly, a bare aiohttp pass-through proxy, and the
gateway with every feature on, in one run.

    .venv/bin/python bench/gateway/run.py [--duration 10] [--rounds 3] [--baseline REV ...]
                                          [--connections 1,64] [--modes plain,stream]

Set-up (all on loopback, private TOKENTRAIL_HOME):
- a real Kafka broker (`tokentrail.broker.server.up`), a key minted for tenant `bench`, and a
  Limits record for it (100M requests/min and tokens/min, so the limiter runs on every request
  without refusing), body capture off (the default);
- `tokentrail mock-upstream` as both providers;
- `bench/gateway/bare_proxy.py` (aiohttp server + aiohttp ClientSession, forward and return:
  the floor of this stack) and `python -m gateway` (auth, freeze check, limits, usage reading,
  signing, write-ahead log, Kafka), each one process; and the baseline `no-wal`, the same
  gateway with `TOKENTRAIL_SPOOL_WRITE_AHEAD=false` (records straight to Kafka, as before the
  write-ahead log), so the log's cost is a ratio from the same run.
Pinning on this 2-core machine: the server under test (bare proxy or gateway, with all its
threads) on core 1; wrk (-t1), the mock and the Kafka broker on core 0, so the measured
process has a core to itself and the load generator never competes with it.

For 1 and 64 connections, non-streaming and streaming POST /v1/chat/completions, prints
requests/s, p50/p99, latency added over the mock, the gateway/bare ratios, the gateway's CPU
time per request (utime+stime of /proc/<pid>/stat over the run / requests) and its RSS, and
checks that the raw topic holds one record per request the gateway answered (plus marked redeliveries).
`--baseline REV` (repeatable) also runs the gateway of git revision REV (exported with `git
archive`, run from that tree with this virtualenv) as a target named REV, with a key and limits
minted by that revision's own control plane (record formats change between revisions), so a
change is measured before and after in the same run; several revisions measure a series of
changes one by one. Comparisons (the log: gateway vs no-wal; everything since REV without the
log: no-wal vs REV; all: gateway vs REV; each baseline against the first) are paired by round:
the median and range of the rounds' req/s ratios, p50 differences and CPU-per-request ratios.
While one server is measured the others are stopped (SIGSTOP, SIGCONT after): they share its
core, and an idle process's timers would otherwise take from it. Each cell is measured `--rounds` times, the targets in a rotated order each round, and the
median round is reported: a machine that slows down for a while (shared, noisy) then moves
every target alike instead of whichever ran at that moment.
Installs wrk with apt-get when missing. Exits 1 when wrk saw errors or non-2xx answers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from gateway.delivery import REDELIVERY_HEADER  # noqa: E402
from mock_upstream.process import MockProcess, spawn_mock_upstream  # noqa: E402
from schemas.models import Actor, Limits  # noqa: E402
from tokentrail.broker.admin import read_to_end  # noqa: E402
from tokentrail.broker.server import free_port, stop_broker, up  # noqa: E402
from tokentrail.control.plane import ControlPlane  # noqa: E402
from tokentrail.settings import CoreSettings  # noqa: E402
from tokentrail.topics import CALLS_RAW  # noqa: E402

HERE = Path(__file__).resolve().parent
SERVER_CORE, LOAD_CORE = "1", "0"
PREFIX = "bench."
SIGNING_KEY = "bench-signing-key-0123456789abcdef"
OPERATOR_KEY = "bench-operator-key-0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int
    cpu_s: float | None = None


def ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def lua_script(directory: Path, target: str, key: str, stream: bool) -> Path:
    body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]%s}' % (
        ',"stream":true' if stream else ""
    )
    path = directory / f"post-{target}-{'stream' if stream else 'plain'}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{body}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    return path


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (all threads)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk_command(url: str, script: Path, connections: int, seconds: int, *script_args: str) -> list[str]:
    """wrk on the load core, one thread, POSTing `script`'s request to the chat endpoint."""
    command = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s"]
    return [*command, str(script), url + "/v1/chat/completions", *(("--", *script_args) if script_args else ())]


def wrk(url: str, script: Path, connections: int, duration: int, pid: int | None = None) -> Run:
    before = cpu_seconds(pid) if pid else None
    out = subprocess.run(
        wrk_command(url, script, connections, duration),
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    cpu = cpu_seconds(pid) - before if pid else None
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if "99" not in percentiles:
        raise RuntimeError(f"wrk against {url} gave no latency distribution:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad += sum(int(n) for n in errors.groups()) if errors else 0
    return Run(
        float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        _ms(percentiles["50"]),
        _ms(percentiles["99"]),
        requests,
        bad,
        cpu,
    )


def wait_ready(url: str, process: subprocess.Popen, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: process exited ({process.returncode})")
        try:
            with urllib.request.urlopen(url + path, timeout=1) as response:
                if response.status in (200, 404):
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 404, 405):
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} not ready within {timeout:.0f}s")


def wait_key(url: str, key: str, timeout: float = 30.0) -> None:
    """The key reached this gateway (control topics read): a probe answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
        try:
            urllib.request.urlopen(request, timeout=2).read()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise SystemExit(f"{url}: the key was not accepted within {timeout:.0f}s")


def gateway_requests(url: str) -> int:
    """Requests the gateway answered, from its /metrics (all endpoints and statuses)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return int(
        sum(
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith("tokentrail_gateway_requests_total{")
        )
    )


def topic_records(bootstrap: str, topic: str) -> tuple[int, int, int]:
    """(distinct calls, records, unmarked extra copies) on `topic`. A record sent again from
    the write-ahead log (Kafka took it but the acknowledgement did not come in time, e.g. while
    the gateway was stopped between its measurements) carries the redelivery header, and the
    flows count a call once; its first copy may also never have landed, so calls are counted
    by call id. An extra copy without the header would be a duplicate nobody marked."""
    calls: set[str] = set()
    records = unmarked = 0
    for message in read_to_end(bootstrap, topic):
        records += 1
        call_id = orjson.loads(message.value())["call_id"]
        if call_id in calls and (REDELIVERY_HEADER, b"1") not in (message.headers() or []):
            unmarked += 1
        calls.add(call_id)
    return len(calls), records, unmarked


BASELINE_KEY = """
from datetime import UTC, datetime
from schemas.models import Actor, Limits
from tokentrail.control.plane import ControlPlane
from tokentrail.settings import CoreSettings
plane = ControlPlane(CoreSettings())
identity, key = plane.create_key("bench-base", Actor(type="system", id="wrk"))
plane.put_control(Limits(scope=f"key:{identity.key_id}", requests_per_minute=100_000_000,
                         tokens_per_minute=100_000_000, changed_at=datetime.now(UTC)))
print(key)
"""
"""Run with the baseline's tree first on the path: mints a key and its limits in that
revision's record format (the current control plane refuses and is refused by older formats)."""


@contextmanager
def bench_stack(name: str, pinned: bool) -> Iterator[tuple[Path, Any, MockProcess]]:
    """A private work directory (`<it>/home` the TOKENTRAIL_HOME), a Kafka broker and the mock
    upstream, all removed afterwards; `pinned`: the broker and the mock on the load core."""
    workdir = Path(tempfile.mkdtemp(prefix=f"tokentrail-bench-{name}-"))
    home = workdir / "home"
    mock = None
    try:
        handle, _, _ = up(home, port=free_port(), topic_prefix=PREFIX, die_with_parent=True)
        if pinned:
            subprocess.run(["taskset", "-a", "-p", "-c", LOAD_CORE, str(handle.pid)], check=True, capture_output=True)
        mock = spawn_mock_upstream(prefix=["taskset", "-c", LOAD_CORE] if pinned else [])
        yield workdir, handle, mock
    finally:
        if mock is not None:
            mock.stop()
        stop_broker(home)
        shutil.rmtree(workdir, ignore_errors=True)


def gateway_env(home: Path, bootstrap: str, mock_url: str) -> dict[str, str]:
    """The environment of a benchmarked gateway: private home, the broker, the bench keys, the
    mock as both providers."""
    return {
        **os.environ,
        "TOKENTRAIL_HOME": str(home),
        "TOKENTRAIL_KAFKA_BOOTSTRAP": bootstrap,
        "TOKENTRAIL_TOPIC_PREFIX": PREFIX,
        "TOKENTRAIL_SIGNING_KEY": SIGNING_KEY,
        "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY,
        "TOKENTRAIL_UPSTREAM_OPENAI_URL": mock_url,
        "TOKENTRAIL_UPSTREAM_ANTHROPIC_URL": mock_url,
        "OPENAI_API_KEY": "sk-bench",
        "ANTHROPIC_API_KEY": "sk-ant-bench",
    }


def export_revision(revision: str, tree: Path) -> Path:
    """The files of git revision `revision` in `tree` (`git archive`), to run its gateway, with
    its C extensions built in place (without them it would run its slower Python fallbacks)."""
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    if (tree / "setup.py").exists():
        built = subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, capture_output=True, text=True
        )
        if built.returncode != 0:
            print(f"warning: {revision}'s C extensions did not build:\n{built.stderr[-2000:]}", file=sys.stderr)
    return tree


def bench_key(home: Path, bootstrap: str) -> str:
    """A key for tenant `bench` minted by this tree's control plane, with limits high enough
    that the limiter runs on every request without refusing one."""
    plane = ControlPlane(
        CoreSettings(home=home, kafka_bootstrap=bootstrap, topic_prefix=PREFIX, operator_key=OPERATOR_KEY)
    )
    identity, key = plane.create_key("bench", Actor(type="system", id="wrk"))
    plane.put_control(
        Limits(
            scope=f"key:{identity.key_id}",
            requests_per_minute=100_000_000,
            tokens_per_minute=100_000_000,
            changed_at=datetime.now(UTC),
        )
    )
    return key


def baseline_key(env: dict[str, str], tree: Path) -> str:
    """A key (with limits) minted by the control plane of the revision exported in `tree`."""
    return subprocess.run(
        [sys.executable, "-c", BASELINE_KEY],
        env={**env, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@contextmanager
def only_running(name: str, servers: dict[str, int]) -> Iterator[None]:
    """Stop every server but `name` (all share the measured core) for the duration."""
    others = [pid for other, pid in servers.items() if other != name]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def median_run(runs: list[Run]) -> Run:
    """The round with the median req/s, its CPU and request counts summed over all rounds (CPU
    per request is a ratio of totals)."""
    middle = sorted(runs, key=lambda run: run.rps)[len(runs) // 2]
    cpu = None if middle.cpu_s is None else sum(run.cpu_s or 0.0 for run in runs)
    requests, bad = sum(run.requests for run in runs), sum(run.bad for run in runs)
    return Run(middle.rps, middle.p50_ms, middle.p99_ms, requests, bad, cpu)


def paired(
    rounds: dict[tuple[str, bool, int], list[Run]], name: str, other: str, stream: bool, connections: int
) -> str:
    """`name` against `other` round by round (each round measures both within seconds, so a
    machine that slows down for a while moves both alike): the median and range of the rounds'
    req/s ratios, p50 differences and CPU-per-request ratios."""
    pairs = list(zip(rounds[(name, stream, connections)], rounds[(other, stream, connections)], strict=True))
    rps = sorted(a.rps / b.rps for a, b in pairs)
    p50 = sorted(a.p50_ms - b.p50_ms for a, b in pairs)
    cpu = sorted(
        (a.cpu_s / a.requests) / (b.cpu_s / b.requests)
        for a, b in pairs
        if a.cpu_s and b.cpu_s and a.requests and b.requests
    )
    middle = len(pairs) // 2
    cpu_text = f", CPU per request {cpu[len(cpu) // 2]:.3f} ({cpu[0]:.2f}-{cpu[-1]:.2f})" if cpu else ""
    return (
        f"{name} vs {other}, median of {len(pairs)} rounds' ratios: req/s {rps[middle]:.3f} ({rps[0]:.2f}-{rps[-1]:.2f}), "
        f"p50 {p50[middle]:+.3f} ms ({p50[0]:+.3f} to {p50[-1]:+.3f}){cpu_text}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell, median reported (default 3)")
    parser.add_argument("--connections", default="1,64", help="comma-separated wrk connection counts (default 1,64)")
    parser.add_argument("--modes", default="plain,stream", help="comma-separated: plain, stream (default both)")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        action="append",
        default=[],
        help="also run the gateway of this git revision (repeatable)",
    )
    args = parser.parse_args()
    try:
        connection_counts = [int(n) for n in args.connections.split(",")]
    except ValueError:
        parser.error(f"--connections: not a list of numbers: {args.connections!r}")
    streams = [{"plain": False, "stream": True}.get(mode.strip()) for mode in args.modes.split(",")]
    if None in streams or min(connection_counts) < 1 or args.rounds < 1 or args.duration < 1:
        parser.error("--modes takes plain and/or stream; --connections, --rounds and --duration must be positive")
    ensure_wrk()
    processes: list[subprocess.Popen] = []
    with bench_stack("gateway", pinned=True) as (workdir, handle, mock):
        home = workdir / "home"
        try:
            key = bench_key(home, handle.bootstrap)

            bare_port, gateway_port = free_port(), free_port()
            bare = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    SERVER_CORE,
                    sys.executable,
                    str(HERE / "bare_proxy.py"),
                    "--upstream",
                    mock.url,
                    "--port",
                    str(bare_port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / "bare.log", "wb"),
            )  # wrk's closing connections log tracebacks
            processes.append(bare)
            env = gateway_env(home, handle.bootstrap, mock.url)
            gateway = subprocess.Popen(
                ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "gateway", "--port", str(gateway_port)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / "gateway.log", "wb"),
            )
            processes.append(gateway)
            # The baseline: the same gateway without the write-ahead log (records go to Kafka
            # directly, to the spool only on failure), as before issue 11.
            no_wal_port = free_port()
            no_wal = subprocess.Popen(
                ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "gateway", "--port", str(no_wal_port)],
                env={
                    **env,
                    "TOKENTRAIL_SPOOL_WRITE_AHEAD": "false",
                    "TOKENTRAIL_SPOOL_DIR": str(home / "spool-no-wal"),
                },
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / "gateway-no-wal.log", "wb"),
            )
            processes.append(no_wal)
            keys = dict.fromkeys(("mock", "bare", "no-wal", "gateway"), key)
            targets = {
                "mock": (mock.url, None),
                "bare": (f"http://127.0.0.1:{bare_port}", bare.pid),
                "no-wal": (f"http://127.0.0.1:{no_wal_port}", no_wal.pid),
                "gateway": (f"http://127.0.0.1:{gateway_port}", gateway.pid),
            }
            gateways = {"gateway": gateway, "no-wal": no_wal}
            for revision in args.baseline:
                tree = export_revision(revision, workdir / f"baseline-{revision}")
                keys[revision] = baseline_key(env, tree)
                base_port = free_port()
                base = subprocess.Popen(
                    ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "gateway", "--port", str(base_port)],
                    env={**env, "PYTHONPATH": str(tree), "TOKENTRAIL_SPOOL_DIR": str(home / f"spool-{revision}")},
                    cwd=tree,
                    stdout=subprocess.DEVNULL,
                    stderr=open(workdir / f"{revision}.log", "wb"),
                )
                processes.append(base)
                targets[revision] = (f"http://127.0.0.1:{base_port}", base.pid)
                gateways[revision] = base
            wait_ready(targets["bare"][0], bare, "/healthz")
            for name, process in gateways.items():
                wait_ready(targets[name][0], process, "/readyz")
                wait_key(targets[name][0], keys[name])  # the key and its limits reached the gateway

            scripts = {
                (name, stream): lua_script(workdir, name, keys[name], stream)
                for name in targets
                for stream in (False, True)
            }
            servers = {name: pid for name, (_, pid) in targets.items() if pid is not None}
            for name, (url, _) in targets.items():  # warm-up: connections, caches, page-ins
                wrk(url, scripts[(name, False)], 64, 2)
            rounds: dict[tuple[str, bool, int], list[Run]] = {}
            names = list(targets)
            for stream in streams:
                for connections in connection_counts:
                    for round_number in range(args.rounds):
                        order = names[round_number % len(names) :] + names[: round_number % len(names)]
                        for name in order:
                            url, pid = targets[name]
                            with only_running(name, servers):
                                if (
                                    name in gateways
                                ):  # stopped meanwhile: it fails closed until the control topics answer
                                    wait_ready(url, gateways[name], "/readyz")
                                run = wrk(url, scripts[(name, stream)], connections, args.duration, pid)
                            rounds.setdefault((name, stream, connections), []).append(run)
            results = {cell: median_run(runs) for cell, runs in rounds.items()}
            gateway_rss = rss_mib(gateway.pid)
            spool_left = sum(path.stat().st_size for path in (home / "spool").glob("*.wal"))
            bare_rss = rss_mib(bare.pid)

            print(
                f"POST /v1/chat/completions, wrk -t1 -d{args.duration}s, median of {args.rounds} rounds; "
                f"server under test on core {SERVER_CORE}, wrk + mock + Kafka on core {LOAD_CORE}"
            )
            print(
                f"{'mode':<10} {'conns':>5} {'target':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
                f"{'+p50 ms':>8} {'+p99 ms':>8} {'CPU µs/req':>10}"
            )
            failed = False
            for stream in streams:
                for connections in connection_counts:
                    mock_run = results[("mock", stream, connections)]
                    for name in targets:
                        run = results[(name, stream, connections)]
                        cpu = (
                            f"{run.cpu_s / run.requests * 1e6:10.0f}"
                            if run.cpu_s is not None and run.requests
                            else f"{'':>10}"
                        )
                        added = (
                            ""
                            if name == "mock"
                            else f"{run.p50_ms - mock_run.p50_ms:8.3f} {run.p99_ms - mock_run.p99_ms:8.3f}"
                        )
                        print(
                            f"{'stream' if stream else 'plain':<10} {connections:>5} {name:<8} {run.rps:9.0f} "
                            f"{run.p50_ms:8.3f} {run.p99_ms:8.3f} {added:>17} {cpu}"
                        )
                        if run.bad:
                            print(f"  !! {name}: {run.bad} errors or non-2xx answers")
                            failed = True
                    gateway_run, bare_run = (
                        results[("gateway", stream, connections)],
                        results[("bare", stream, connections)],
                    )
                    print(
                        f"{'':<10} {'':>5} gateway/bare: req/s {gateway_run.rps / bare_run.rps:.2f}, "
                        f"added p50 {(gateway_run.p50_ms - mock_run.p50_ms) / max(1e-9, bare_run.p50_ms - mock_run.p50_ms):.2f}"
                    )
                    print(f"{'':<10} {'':>5} {paired(rounds, 'gateway', 'no-wal', stream, connections)}")
                    for revision in args.baseline:
                        print(f"{'':<10} {'':>5} {paired(rounds, 'no-wal', revision, stream, connections)}")
                        print(f"{'':<10} {'':>5} {paired(rounds, 'gateway', revision, stream, connections)}")
                    for revision in args.baseline[1:]:
                        print(f"{'':<10} {'':>5} {paired(rounds, revision, args.baseline[0], stream, connections)}")
            time.sleep(2)
            answered = sum(gateway_requests(targets[name][0]) for name in gateways)
            calls, records, unmarked = topic_records(handle.bootstrap, PREFIX + CALLS_RAW)
            print(f"RSS after the runs: gateway {gateway_rss:.0f} MiB, bare proxy {bare_rss:.0f} MiB")
            print(f"write-ahead log on disk after the runs: {spool_left} bytes (acknowledged segments are deleted)")
            matched = calls == answered and unmarked == 0
            print(
                f"raw topic: {calls} calls in {records} records ({records - calls} extra copies, {unmarked} of them "
                f"unmarked), gateway answered {answered} requests ({'one call each' if matched else 'MISMATCH'})"
            )
            failed |= not matched
            return 1 if failed else 0
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    sys.exit(main())
