"""Quiet, clean start and stop: the flows and the gateway stopped with SIGTERM exit 0 and print
nothing alarming (no Rust panic, no traceback, no librdkafka CONFWARN, no WARNING/ERROR on a
normal start); with Kafka unreachable the gateway says so in a few lines, not hundreds, and
is live but not ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.fixtures.gateway import OPERATOR_KEY, SIGNING_KEY, gateway_env, spawn_gateway
from tokentrail.broker.server import free_port
from tokentrail.processes import die_with_parent, stop_process

ROOT = Path(__file__).resolve().parents[1]
ALARMING = ("panicked", "Traceback", "CONFWARN", "RUST_BACKTRACE", "Failed to acquire idempotence PID")


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.2)


@pytest.mark.kafka
@pytest.mark.slow
def test_flows_stopped_with_sigterm_exits_0_without_a_panic(kafka_topics, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")},
        **kafka_topics.env,
        "TOKENTRAIL_HOME": str(tmp_path),
        "TOKENTRAIL_SIGNING_KEY": SIGNING_KEY,
        "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY,
        "TOKENTRAIL_FLOWS_METRICS_PORT": "0",
        "RUST_BACKTRACE": "1",  # a panic would print its whole backtrace
    }
    log = tmp_path / "flows.log"
    with open(log, "wb") as out:
        flows = subprocess.Popen(
            [sys.executable, "-m", "tokentrail", "flows"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=die_with_parent,
        )
    try:
        _wait_for(lambda: b"tokentrail flows: running" in log.read_bytes(), 120, "the flows started")
        time.sleep(3)  # the sources are polling Kafka: where an interrupt used to land
        flows.send_signal(signal.SIGTERM)
        assert flows.wait(timeout=60) == 0, log.read_text()
    finally:
        if flows.poll() is None:
            flows.kill()
            flows.wait()
    text = log.read_text()
    assert not [word for word in ALARMING if word in text], text
    assert not [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line], text
    assert text.rstrip().endswith("tokentrail flows: stopped"), text


def _levels(log: str) -> list[dict]:
    return [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]


@pytest.mark.kafka
@pytest.mark.slow
def test_gateway_starts_quietly_and_stops_with_sigterm_exit_0(kafka_topics, mock_upstream, tmp_path):
    gateway = spawn_gateway(gateway_env(kafka_topics, mock_upstream.url), tmp_path / "home")
    time.sleep(1)
    assert gateway.stop() == 0
    log = gateway.logs()
    assert not [word for word in ALARMING if word in log], log
    assert [entry for entry in _levels(log) if entry["level"] in ("WARNING", "ERROR")] == [], log
    assert _levels(log)[-1]["message"] == "gateway stopped"


def test_gateway_without_kafka_is_live_not_ready_and_logs_a_few_lines(tmp_path):
    dead_kafka, port = free_port(), free_port()  # nothing listens on the first
    env = {
        **os.environ,
        "TOKENTRAIL_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead_kafka}",
        "TOKENTRAIL_HOME": str(tmp_path),
        "TOKENTRAIL_SIGNING_KEY": SIGNING_KEY,
        "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY,
        "OPENAI_API_KEY": "sk-x",
        "ANTHROPIC_API_KEY": "sk-ant-x",
    }
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).close()
                return True
            except (urllib.error.URLError, OSError):
                return False

        _wait_for(answers, 60, "the gateway answered /healthz")
        started = time.monotonic()
        while time.monotonic() - started < 6:
            request = urllib.request.Request(
                url + "/v1/chat/completions", data=b"{}", headers={"Authorization": "Bearer tt_x"}, method="POST"
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 503
            time.sleep(0.05)
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(url + "/readyz", timeout=5)
        assert not_ready.value.code == 503
        assert orjson.loads(not_ready.value.read())["registry_loaded"] is False
    finally:
        assert stop_process(process, 30) == 0
    lines = log.read_text().splitlines()
    assert len(lines) <= 12, "\n".join(lines)
    assert "Traceback" not in "\n".join(lines)
