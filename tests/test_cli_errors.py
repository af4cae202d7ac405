"""Every entry point answers a misuse with one line on stderr, `tokentrail <command>: ...`, a
non-zero exit and no traceback: a busy port, a home without a store, no broker, a bad flag.

Each case runs the real CLI in a subprocess from a directory other than the repository, with
no TOKENTRAIL_* variable but a fresh TOKENTRAIL_HOME."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokentrail.settings import default_home

ROOT = Path(__file__).resolve().parents[1]
KEYS = {
    "TOKENTRAIL_SIGNING_KEY": "cli-errors-test-signing-key-0123456789",
    "TOKENTRAIL_OPERATOR_KEY": "cli-errors-test-operator-key-0123456789",
}
"""Valid keys (32+ characters, distinct), so the misuse under test is the only one."""


def run_cli(args: list[str], cwd: Path, home: Path, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
    environment.update(TOKENTRAIL_HOME=str(home), PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "tokentrail", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line(result: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"tokentrail {command}: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gateway_on_a_busy_port(tmp_path, busy_port):
    result = run_cli(["gateway", "--port", str(busy_port)], tmp_path, tmp_path / "home", **KEYS)
    assert_one_line(result, "gateway", f"127.0.0.1:{busy_port}", "(port from --port)", "already in use")


def test_gateway_port_out_of_range_is_blamed_on_the_flag(tmp_path):
    result = run_cli(["gateway", "--port", "99999"], tmp_path, tmp_path / "home", **KEYS)
    line = assert_one_line(result, "gateway", "--port", "99999")
    assert "TOKENTRAIL_GATEWAY_PORT" not in line


def test_mock_upstream_on_a_busy_port(tmp_path, busy_port):
    result = run_cli(["mock-upstream", "--port", str(busy_port)], tmp_path, tmp_path / "home")
    assert_one_line(result, "mock-upstream", str(busy_port))


def test_kafka_up_on_a_busy_port(tmp_path, busy_port):
    result = run_cli(["kafka", "up", "--port", str(busy_port)], tmp_path, tmp_path / "home")
    assert_one_line(result, "kafka", f"port {busy_port}", "already in use")


def test_flows_unknown_flag(tmp_path):
    result = run_cli(["flows", "--wokers", "2"], tmp_path, tmp_path / "home", **KEYS)
    assert_one_line(result, "flows", "unrecognized arguments: --wokers 2")


def test_migrate_bad_setting(tmp_path):
    result = run_cli(["migrate"], tmp_path, tmp_path / "home", TOKENTRAIL_RETENTION_DAYS="forever")
    assert_one_line(result, "migrate", "TOKENTRAIL_RETENTION_DAYS")


@pytest.mark.parametrize(
    "args",
    [
        ["report", "cost", "--by", "model"],
        ["events", "--tenant", "acme", "--since", "2026-01-01", "--until", "2026-01-02"],
    ],
)
def test_readers_in_a_home_without_a_store_name_it_and_create_nothing(tmp_path, args):
    home = tmp_path / "home"
    result = run_cli(args, tmp_path, home)
    assert_one_line(result, args[0], f"no ClickHouse store in {home / 'clickhouse'}", "start `tokentrail flows`")
    assert not home.exists()


def test_keys_list_without_a_broker_is_one_line_within_seconds(tmp_path, closed_port):
    result = run_cli(
        ["keys", "list"], tmp_path, tmp_path / "home", timeout=60, TOKENTRAIL_KAFKA_BOOTSTRAP=f"127.0.0.1:{closed_port}"
    )
    assert_one_line(result, "keys", f"no Kafka broker answers at 127.0.0.1:{closed_port}", "tokentrail kafka up")


def test_a_misspelt_option_of_a_sub_command_names_that_command(tmp_path):
    result = run_cli(["report", "cost", "--bye", "model"], tmp_path, tmp_path / "home")
    assert_one_line(result, "report cost", "unrecognized arguments: --bye model")


def test_version_flag(tmp_path):
    result = run_cli(["--version"], tmp_path, tmp_path / "home")
    assert result.returncode == 0
    assert result.stdout.strip().startswith("tokentrail 0.")


def test_default_home_is_the_users_state_directory_whatever_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_home() == tmp_path / "state" / "tokentrail"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_home() == Path.home() / ".local" / "state" / "tokentrail"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # not absolute: ignored, as the spec says
    assert default_home() == Path.home() / ".local" / "state" / "tokentrail"


def test_a_relative_home_is_made_absolute(monkeypatch, tmp_path):
    from tokentrail.settings import CoreSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOKENTRAIL_HOME", "state")
    assert CoreSettings().home == tmp_path / "state"


def test_flows_without_a_broker_is_one_line(tmp_path, closed_port):
    result = run_cli(
        ["flows"],
        tmp_path,
        tmp_path / "home",
        timeout=90,
        **KEYS,
        TOKENTRAIL_KAFKA_BOOTSTRAP=f"127.0.0.1:{closed_port}",
    )
    assert_one_line(result, "flows", f"no Kafka broker answers at 127.0.0.1:{closed_port}", "tokentrail kafka up")
