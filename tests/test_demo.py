"""`tokentrail demo` is the product's smoke test: every real component wired together once,
incidents injected, detection finding them, and nothing left running afterwards."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tokentrail.broker.server import free_port

ROOT = Path(__file__).resolve().parents[1]


def demo_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "TOKENTRAIL_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for name in ("TOKENTRAIL_KAFKA_BOOTSTRAP", "TOKENTRAIL_TOPIC_PREFIX", "TOKENTRAIL_CLICKHOUSE_URL"):
        env.pop(name, None)
    return env


def demo_command(*extra: str) -> list[str]:
    ports = ["--kafka-port", str(free_port()), "--gateway-port", str(free_port())]
    return [sys.executable, "-m", "tokentrail", "demo", "--calls", "4", *ports, *extra]


def assert_all_stopped(out: str, expected: int) -> None:
    """Every process the demo says it stopped (gateway, flows, mock provider, broker) is gone."""
    pids = [int(pid) for pid in re.findall(r"stopped .+ \(pid (\d+)\)", out)]
    assert len(pids) == expected, out[-2000:]
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        time.sleep(0.2)
    assert not alive, f"still running: {alive}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def table_rows(out: str, header_start: str) -> list[str]:
    """The body lines of the printed table whose header starts with `header_start`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("-"):
            break
        rows.append(line)
    return rows


@pytest.mark.kafka
@pytest.mark.slow
def test_demo_finds_the_injected_incidents_writes_the_report_and_cleans_up(tmp_path):
    html = tmp_path / "report.html"
    started = time.monotonic()
    result = subprocess.run(
        demo_command("--html", str(html)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=demo_env(tmp_path / "home"),
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-3000:]
    print(f"demo took {time.monotonic() - started:.0f} s")

    rows = re.search(r"(\d+) llm_calls rows in ClickHouse for (\d+) calls forwarded", out)
    assert rows and rows.group(1) == rows.group(2) and int(rows.group(2)) >= 100, out[-3000:]
    assert "the gateway now answers 403 to summarizer's key" in out
    # Every injected incident found, each by the rule that should find it.
    delays = table_rows(out, "incident ")
    assert len(delays) == 9, delays
    assert not [line for line in delays if "NOT FOUND" in line], delays
    found = {tuple(line.split()[-5:-3]) for line in delays}
    tenants = {
        re.search(r"tenant (\S+): ", line).group(1)
        for line in out.splitlines()
        if line.startswith("demo") and ": tenant " in line
    }
    acme, globex, initech = sorted(tenants)
    assert found >= {(globex, "budget_exhausted"), (acme, "spend_spike"), ("_system", "pattern")}, found
    assert {(t, "error_budget_burn") for t in tenants} <= found and {(t, "pattern") for t in tenants} <= found
    # The spike names the runaway agent and the human it acts for; the provider incident every tenant.
    alerts = table_rows(out, "starts_at ")
    spike = next(line for line in alerts if "spend_spike" in line)
    assert "agent:summarizer (for human:alice)" in spike
    patterns = table_rows(out, "first_seen ")
    incident = next(line for line in patterns if "_system" in line)
    assert all(tenant in incident for tenant in tenants), incident
    # Spend rolls up to the humans at the roots of the agent chains: alice pays for the loop.
    cost = table_rows(out, "tenant_id ")
    alice = next(line for line in cost if " alice " in line)
    assert float(alice.split()[-2]) > 1.0, alice  # 30 loop calls at $0.12
    # The HTML report, self-contained.
    assert f"HTML report: {html}" in out
    page = html.read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "<script src=" not in page
    assert acme in page and "summarizer" in page  # the demo's own data
    assert_all_stopped(out, expected=4)
    assert not (tmp_path / "home" / "kafka" / "broker.json").exists()


@pytest.mark.kafka
@pytest.mark.slow
def test_an_interrupted_demo_stops_everything_it_started(tmp_path):
    demo = subprocess.Popen(
        demo_command(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=demo_env(tmp_path / "home"),
    )
    watchdog = threading.Timer(240, demo.kill)
    watchdog.start()
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if "1/5 ordinary traffic" in line:  # everything is up and traffic flows
                demo.send_signal(signal.SIGINT)
                break
        lines.extend(demo.stdout)
        code = demo.wait()
    finally:
        watchdog.cancel()
    out = "".join(lines)
    assert code == 130, out
    assert "demo" in out and "interrupted" in out
    assert_all_stopped(out, expected=4)
    assert not (tmp_path / "home" / "kafka" / "broker.json").exists()


def test_demo_refuses_a_bad_call_count_before_starting_anything(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tokentrail", "demo", "--calls", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=demo_env(tmp_path / "home"),
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "tokentrail demo: --calls must be at least 1"
    assert not (tmp_path / "home" / "kafka").exists()
