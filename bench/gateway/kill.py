"""Gateway SIGKILL under load: is every answered request one row in ClickHouse after a restart?

    .venv/bin/python bench/gateway/kill.py [--kills 3] [--connections 64] [--load-seconds 4] [--stream]

One run on a private TOKENTRAIL_HOME and a real Kafka broker (`tokentrail.broker.server.up`),
`tokentrail mock-upstream` as the provider. Four scenarios, `--kills` kills each:
- `wal steady`: the gateway as shipped (write-ahead log on), the broker running;
- `wal paused`: the same, the broker SIGSTOPped one second before the kill and resumed two
  seconds after it stopped (records queue unacknowledged, the case that lost 35% of a run before
  the log);
- `no-wal steady` / `no-wal paused`, the baseline: the same gateway with
  `TOKENTRAIL_SPOOL_WRITE_AHEAD=false` (records handed straight to librdkafka, as before issue
  11), so the run also shows what the log saves and that this benchmark can see a loss.
Each kill: wrk (`-t1 -c<connections>`, pinned like bench/gateway/run.py: the gateway on core 1,
wrk, mock and broker on core 0) posts chat completions (`--stream`: streamed ones, whose record
is written before the end of the chunked body and sent after it); its Lua script writes the
`x-tokentrail-request-id` of every complete 200 answer to a file (a response cut by the kill
is an error to wrk, not an answer). After `--load-seconds` the gateway gets SIGKILL; it is then
started again on the same spool directory and stopped once its log is drained.
Afterwards one `tokentrail flows` run reads the whole raw topic into the embedded ClickHouse and
each answered request id is looked up in `llm_calls`: lost = answered without a row, doubled =
answered with more than one. Also printed: req/s before the kill, records on the raw topic and
how many were marked redeliveries (sent again from the log; the flows count a call once).
Exits 1 when the shipped gateway lost or doubled any answered request.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from run import (  # noqa: E402
    LOAD_CORE,
    OPERATOR_KEY,
    PREFIX,
    SERVER_CORE,
    bench_stack,
    ensure_wrk,
    gateway_env,
    wait_key,
    wait_ready,
    wrk_command,
)

from gateway.delivery import REDELIVERY_HEADER  # noqa: E402
from schemas.models import Actor  # noqa: E402
from tokentrail.broker.admin import read_to_end  # noqa: E402
from tokentrail.broker.server import free_port, running_broker  # noqa: E402
from tokentrail.control.plane import ControlPlane  # noqa: E402
from tokentrail.processes import stop_process  # noqa: E402
from tokentrail.settings import CoreSettings  # noqa: E402
from tokentrail.storage import StorageSettings  # noqa: E402
from tokentrail.storage.query_server import find_query_server  # noqa: E402
from tokentrail.topics import CALLS_RAW  # noqa: E402

PAUSE_BEFORE_KILL_S = 1.0
PAUSE_S = 2.0
DRAIN_TIMEOUT_S = 120.0
FLOWS_TIMEOUT_S = 900.0

RECORDING_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]%s}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
local answered
function init(args)
  answered = io.open(args[1], "w")
  answered:setvbuf("line")
end
function response(status, headers, body)
  if status == 200 then
    answered:write(headers["x-tokentrail-request-id"], "\\n")
  end
end
"""
"""Records the request id of each whole 200 answer, one line each, written as it arrives (wrk
may be mid-run when the gateway dies; a line buffer leaves nothing in wrk's memory)."""


@dataclass
class Scenario:
    write_ahead: bool
    broker: str
    answered: set[str] = field(default_factory=set)
    rps: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{'wal' if self.write_ahead else 'no-wal'} {self.broker}"


def spool_records(url: str) -> float:
    """The gateway's `tokentrail_gateway_spool_records` gauge."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "tokentrail_gateway_spool_records":
            return float(family.samples[0].value)
    raise SystemExit(f"{url}/metrics has no tokentrail_gateway_spool_records")


def start_gateway(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        gateway = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "gateway", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    wait_ready(f"http://127.0.0.1:{port}", gateway, "/readyz")
    return gateway


def wait_drained(url: str, timeout: float = DRAIN_TIMEOUT_S) -> None:
    """Nothing left in the gateway's log or spool: every record acknowledged by Kafka."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            spooling = orjson.loads(response.read())["spooling"]
        if not spooling and spool_records(url) == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"{url}: log not drained within {timeout:.0f}s")


def kill_under_load(
    scenario: Scenario, env: dict[str, str], script: Path, workdir: Path, kill: int, connections: int, load_s: float
) -> None:
    """One kill: load, SIGKILL (broker paused around it when asked), restart on the same log, drain."""
    port = free_port()
    label = f"{scenario.name.replace(' ', '-')}-{kill}"
    spool = workdir / f"spool-{scenario.name.replace(' ', '-')}"
    target_env = {
        **env,
        "TOKENTRAIL_SPOOL_DIR": str(spool),
        "TOKENTRAIL_SPOOL_WRITE_AHEAD": "true" if scenario.write_ahead else "false",
    }
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"gateway-{label}.log"
    gateway = start_gateway(target_env, port, log)
    wait_key(url, env["BENCH_KEY"])
    answered_file = workdir / f"answered-{label}.txt"
    broker_pid = running_broker(Path(env["TOKENTRAIL_HOME"])).pid
    load = subprocess.Popen(
        wrk_command(url, script, connections, round(load_s + 1), str(answered_file)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.monotonic()
    paused_at = None
    try:
        if scenario.broker == "paused":
            time.sleep(load_s - PAUSE_BEFORE_KILL_S)
            os.kill(broker_pid, signal.SIGSTOP)
            paused_at = time.monotonic()
            time.sleep(PAUSE_BEFORE_KILL_S)
        else:
            time.sleep(load_s)
        gateway.kill()
        gateway.wait()
        killed_after = time.monotonic() - started
        load.wait(timeout=60)
        if paused_at is not None:
            time.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
    finally:
        if paused_at is not None:
            os.kill(broker_pid, signal.SIGCONT)
        if load.poll() is None:
            load.kill()
    answered = set(filter(None, answered_file.read_text().splitlines()))
    scenario.answered |= answered
    scenario.rps.append(len(answered) / killed_after)
    restarted = start_gateway(target_env, port, log)
    try:
        wait_drained(url)
    finally:
        stop_process(restarted, timeout=30)
    print(f"  {scenario.name:<14} kill {kill + 1}: {len(answered):>6} answered ({len(answered) / killed_after:,.0f}/s)")


def raw_topic(bootstrap: str) -> tuple[int, int, int]:
    """(calls, records, marked redeliveries) of kind `call` on the raw topic."""
    calls: set[str] = set()
    records = redeliveries = 0
    for message in read_to_end(bootstrap, PREFIX + CALLS_RAW):
        record = orjson.loads(message.value())
        if record["kind"] != "call":
            continue
        records += 1
        redeliveries += (REDELIVERY_HEADER, b"1") in (message.headers() or [])
        calls.add(record["call_id"])
    return len(calls), records, redeliveries


def rows_by_request(env: dict[str, str], home: Path, expected: int) -> Counter[str]:
    """Run `tokentrail flows` until `expected` calls are rows in `llm_calls`; rows per request id."""
    log = (home / "flows.log").open("wb")
    flows_env = {**env, "TOKENTRAIL_FLOWS_METRICS_PORT": str(free_port())}
    flows_env.pop("TOKENTRAIL_CLICKHOUSE_URL", None)
    flows = subprocess.Popen(
        [sys.executable, "-m", "tokentrail", "flows"], env=flows_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    settings = StorageSettings(home=home)
    try:
        deadline = time.monotonic() + FLOWS_TIMEOUT_S
        written = 0
        while written < expected:
            if flows.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"flows wrote {written} of {expected} calls: {(home / 'flows.log').read_text()[-2000:]}"
                )
            remote = find_query_server(settings)
            if remote is not None and remote.pid == flows.pid:
                written = remote.query("SELECT count() AS n FROM llm_calls")[0]["n"]
            time.sleep(0.5)
        time.sleep(2)  # a second copy of anything would be written by now
        remote = find_query_server(settings)
        assert remote is not None
        rows = remote.query("SELECT request_id, count() AS n FROM llm_calls GROUP BY request_id")
        return Counter({row["request_id"]: row["n"] for row in rows})
    finally:
        stop_process(flows, timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3, help="kills per scenario (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--load-seconds", type=float, default=4.0, help="load before each kill (default 4)")
    parser.add_argument("--stream", action="store_true", help="streamed chat completions")
    args = parser.parse_args()
    if args.kills < 1 or args.connections < 1 or args.load_seconds <= PAUSE_BEFORE_KILL_S:
        parser.error(f"--kills and --connections must be positive, --load-seconds above {PAUSE_BEFORE_KILL_S}")
    ensure_wrk()
    with bench_stack("kill", pinned=True) as (workdir, handle, mock):
        home = workdir / "home"
        plane = ControlPlane(
            CoreSettings(home=home, kafka_bootstrap=handle.bootstrap, topic_prefix=PREFIX, operator_key=OPERATOR_KEY)
        )
        _, key = plane.create_key("bench", Actor(type="system", id="wrk"))
        script = workdir / "record-answers.lua"
        script.write_text(RECORDING_SCRIPT % (',"stream":true' if args.stream else "", key))
        env = {**gateway_env(home, handle.bootstrap, mock.url), "BENCH_KEY": key}
        scenarios = [Scenario(wal, broker) for wal in (True, False) for broker in ("steady", "paused")]
        print(
            f"gateway SIGKILL under wrk -t1 -c{args.connections} ({'streamed' if args.stream else 'plain'}), killed after {args.load_seconds:g}s of load, "
            f"{args.kills} kills per scenario; gateway on core {SERVER_CORE}, wrk + mock + Kafka on core {LOAD_CORE}",
            flush=True,
        )
        for kill in range(args.kills):  # scenarios interleaved: a machine slowing down moves them alike
            for scenario in scenarios:
                kill_under_load(scenario, env, script, workdir, kill, args.connections, args.load_seconds)
        calls, records, redeliveries = raw_topic(handle.bootstrap)
        print(f"raw topic: {calls} calls in {records} records, {redeliveries} marked redeliveries", flush=True)
        rows = rows_by_request(env, home, calls)
        print(f"{'scenario':<14} {'answered':>9} {'req/s':>7} {'lost':>6} {'doubled':>8}")
        failed = False
        for scenario in scenarios:
            lost = sum(1 for request_id in scenario.answered if request_id not in rows)
            doubled = sum(1 for request_id in scenario.answered if rows[request_id] > 1)
            rps = sorted(scenario.rps)[len(scenario.rps) // 2]
            print(f"{scenario.name:<14} {len(scenario.answered):>9} {rps:>7,.0f} {lost:>6} {doubled:>8}")
            failed |= scenario.write_ahead and (lost > 0 or doubled > 0 or not scenario.answered)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
