"""Run the mock provider as a child process on a core of its own (tests, demo, benchmarks)."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from mock_upstream.cli import READY_PREFIX
from tokentrail.errors import TokentrailError
from tokentrail.processes import stop_process

START_TIMEOUT = 15.0


class MockStartError(TokentrailError):
    """The child did not come up: it exited, or did not answer /healthz in time."""


@dataclass
class MockProcess:
    url: str
    """Base URL, e.g. http://127.0.0.1:40123; OpenAI clients use url + "/v1", Anthropic url."""
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; safe to call twice."""
        stop_process(self.process, timeout)
        if self.process.stdout:
            self.process.stdout.close()


def spawn_mock_upstream(
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int = 1,
    prefix: Sequence[str] = (),
    die_with_parent: bool = True,
    timeout: float = START_TIMEOUT,
) -> MockProcess:
    """Start `python -m mock_upstream` and return once /healthz answers.

    `prefix` goes before the command (the benchmark pins it with `taskset -c 0`). With
    `die_with_parent` Linux stops the child if this process dies, so no mock outlives a killed
    test run. The port is read from the child's ready line, so port 0 has no race.
    """
    command = [
        *prefix,
        sys.executable,
        "-m",
        "mock_upstream",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    preexec = None
    if die_with_parent:
        from tokentrail.processes import die_with_parent as preexec
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, preexec_fn=preexec, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    mock = MockProcess(url="", process=process)
    try:
        mock.url = _read_ready_url(process, timeout)
        _wait_healthy(mock, timeout)
    except BaseException:
        mock.stop()
        raise
    return mock


def _read_ready_url(process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = process.stdout.readline()
            if not line:
                raise MockStartError(
                    f"mock-upstream exited during start (exit code {process.wait()}); see its stderr above"
                )
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].split()[0]
    raise MockStartError(f"mock-upstream printed no ready line within {timeout:.0f}s")


def _wait_healthy(mock: MockProcess, timeout: float) -> None:
    """Poll /healthz: the ready line says the port listens, this says requests are answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mock.process.poll() is not None:
            raise MockStartError(f"mock-upstream exited during start (exit code {mock.process.returncode})")
        try:
            with urllib.request.urlopen(mock.url + "/healthz", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    raise MockStartError(f"mock-upstream at {mock.url} did not answer /healthz within {timeout:.0f}s")
