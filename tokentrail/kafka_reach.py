"""Whether a Kafka broker answers, for commands that need one: a plain TCP connect to the
bootstrap servers (no librdkafka client, so no log line per refused attempt), and the one-line
error that says where the command looked and what to start."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tokentrail.errors import CliError


def kafka_answers(bootstrap: str, timeout: float) -> bool:
    """True once any bootstrap server accepts a TCP connection within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for address in bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=1.0):
                    return True
            except (OSError, ValueError):
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def unreachable_message(bootstrap: str, home: Path) -> str:
    return (
        f"no Kafka broker answers at {bootstrap} (TOKENTRAIL_HOME={home}): start one with "
        "`tokentrail kafka up` (with this TOKENTRAIL_HOME), or set TOKENTRAIL_KAFKA_BOOTSTRAP"
    )


def require_kafka(bootstrap: str, home: Path, timeout: float) -> None:
    """CliError (one line naming the bootstrap, the home and what to start) unless a broker
    answers within `timeout` seconds."""
    if not kafka_answers(bootstrap, timeout):
        raise CliError(unreachable_message(bootstrap, home))
