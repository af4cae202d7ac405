"""`tokentrail flows` refuses bad configuration with one clear line and exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def flows(*args, tmp_path, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
    environment.update(TOKENTRAIL_HOME=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-m", "tokentrail", "flows", *args],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


KEYS = {"TOKENTRAIL_SIGNING_KEY": "flows-cli-test-signing-key-0123456789", "TOKENTRAIL_OPERATOR_KEY": "o" * 32}


def test_missing_signing_key_is_one_line_and_exit_2(tmp_path):
    result = flows(tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tokentrail flows: TOKENTRAIL_SIGNING_KEY is not set: set it to a shared secret (the demo sets its own)"
    ]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"TOKENTRAIL_SIGNING_KEY": "short"}, "TOKENTRAIL_SIGNING_KEY is too short: 5 characters, at least 32"),
        ({**KEYS, "TOKENTRAIL_OPERATOR_KEY": ""}, "TOKENTRAIL_OPERATOR_KEY is not set"),
        (
            {**KEYS, "TOKENTRAIL_OPERATOR_KEY": KEYS["TOKENTRAIL_SIGNING_KEY"]},
            "must differ from TOKENTRAIL_SIGNING_KEY",
        ),
    ],
)
def test_short_missing_or_shared_keys_are_one_line(tmp_path, env, message):
    result = flows(tmp_path=tmp_path, **env)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["-w", "0"], "must be at least 1"),
        (["-p", "x"], "expected a whole number"),
        (["--flow", "nope"], "argument --flow: invalid choice: 'nope'"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, args, message):
    result = flows(*args, tmp_path=tmp_path, **KEYS)
    assert result.returncode == 2 and message in result.stderr


def test_several_processes_need_a_clickhouse_server(tmp_path):
    result = flows("-p", "2", tmp_path=tmp_path, **KEYS)
    assert result.returncode == 2
    assert "TOKENTRAIL_CLICKHOUSE_URL" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_settings_and_price_file_are_one_line(tmp_path):
    result = flows(tmp_path=tmp_path, **KEYS, TOKENTRAIL_FLOWS_FLUSH_MS="soon")
    assert result.returncode == 2 and "TOKENTRAIL_FLOWS_FLUSH_MS" in result.stderr
    prices = tmp_path / "prices.json"
    prices.write_text('{"openai": {"m": {"input_mtok": -1}}}')
    result = flows(tmp_path=tmp_path, **KEYS, TOKENTRAIL_PRICE_OVERRIDES=str(prices))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tokentrail flows: TOKENTRAIL_PRICE_OVERRIDES: {prices}: openai.m.input_mtok: must be a non-negative number, got -1"
    ]


def test_negative_memory_release_interval_is_one_line(tmp_path):
    result = flows(tmp_path=tmp_path, **KEYS, TOKENTRAIL_FLOWS_RELEASE_MEMORY_SECONDS="-1")
    assert result.returncode == 2 and "TOKENTRAIL_FLOWS_RELEASE_MEMORY_SECONDS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_lists_every_registered_flow(tmp_path):
    from flows.registry import FLOWS

    result = flows("--help", tmp_path=tmp_path)
    assert result.returncode == 0
    for flow in FLOWS.values():
        assert f"  {flow.name:<10} {flow.summary}" in result.stdout


def test_a_registered_flow_builds_from_its_module_and_unknown_names_are_refused():
    from flows.context import FlowContext
    from flows.dataflows import build_dataflow
    from flows.registry import DEFAULT_FLOW
    from flows.settings import FlowSettings
    from tests.fixtures.flows import FakeStore
    from tokentrail.settings import CoreSettings

    context = FlowContext(
        FakeStore(),
        FlowSettings(),
        CoreSettings(
            signing_key=KEYS["TOKENTRAIL_SIGNING_KEY"],
            operator_key=KEYS["TOKENTRAIL_OPERATOR_KEY"],
            kafka_bootstrap="127.0.0.1:1",
        ),
    )
    flow = build_dataflow([DEFAULT_FLOW], context)
    assert flow.flow_id == "tokentrail_enrich"
    steps = {step.step_id for step in flow.substeps}
    assert {
        "tokentrail_enrich.read_raw",
        "tokentrail_enrich.join_identity",
        "tokentrail_enrich.write_clickhouse",
    } <= steps
    with pytest.raises(ValueError, match="unknown flow 'nope'; registered: enrich"):
        build_dataflow(["enrich", "nope"], context)


def test_the_metrics_server_listens_on_loopback_with_bounded_connections_and_timeouts():
    import socket
    import time
    import urllib.request

    from flows import cli
    from tokentrail.broker.server import free_port

    port = free_port()
    server = cli.serve_metrics(port)
    try:
        assert server.server_address[0] == "127.0.0.1"
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(cli.METRICS_CONNECTIONS)]
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        assert extra.recv(1) == b""  # over the bound: closed at once
        started = time.monotonic()
        idle[0].settimeout(cli.METRICS_TIMEOUT_S + 5)
        assert idle[0].recv(1) == b""  # silent connections are closed after the timeout
        assert time.monotonic() - started < cli.METRICS_TIMEOUT_S + 4
        for connection in idle + [extra]:
            connection.close()
        deadline = time.monotonic() + cli.METRICS_TIMEOUT_S + 5
        while True:  # slots come back as the idle connections end
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                    assert reply.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        server.shutdown()
        server.server_close()
