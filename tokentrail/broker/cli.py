"""`tokentrail kafka up|down|status`: the local broker of docs/architecture.md."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

from tokentrail.errors import CliError


def register(subparsers) -> None:
    kafka = subparsers.add_parser(
        "kafka",
        help="run a local Apache Kafka (KRaft, one node) in TOKENTRAIL_HOME",
        description="Run a local single-node Apache Kafka broker whose state lives in TOKENTRAIL_HOME.",
    )
    commands = kafka.add_subparsers(dest="kafka_command", required=True, metavar="ACTION")
    up = commands.add_parser(
        "up",
        help="start the broker (or reuse the running one) and create the topics",
        description="Start the broker, or reuse the one already running, and create the tokentrail "
        "topics (TOKENTRAIL_TOPIC_PREFIX applies). Returns when the broker answers.",
    )
    up.add_argument("--port", type=_port, help="client port on 127.0.0.1 (default 9092)")
    up.add_argument("--data", type=Path, metavar="DIR", help="data directory (default TOKENTRAIL_HOME/kafka/data)")
    up.add_argument("--reset", action="store_true", help="wipe the data directory first")
    up.set_defaults(func=_up)
    commands.add_parser("down", help="stop the broker this home started").set_defaults(func=_down)
    commands.add_parser("status", help="say whether the broker runs (exit 0) or not (exit 1)").set_defaults(
        func=_status
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r} (1-65535)")
    return port


def _up(args) -> int:
    from tokentrail.broker.server import up
    from tokentrail.settings import CoreSettings, load

    home, prefix = _home_and_prefix()
    security = load(CoreSettings).kafka_client_config()
    security.pop("bootstrap.servers")
    with _user_errors():
        handle, started, created = up(home, args.port, args.data, args.reset, topic_prefix=prefix, security=security)
    verb = "started" if started else "already running"
    print(f"kafka {handle.kafka_version} {verb} at {handle.bootstrap} (pid {handle.pid}, log {handle.log_file})")
    print(f"topics: {len(created)} created, all present" + (f" (prefix {prefix!r})" if prefix else ""))
    return 0


def _down(args) -> int:
    from tokentrail.broker.server import stop_broker

    home, _ = _home_and_prefix()
    with _user_errors():
        handle = stop_broker(home)
    print(f"kafka stopped (was pid {handle.pid} at {handle.bootstrap})" if handle else "kafka was not running")
    return 0


def _status(args) -> int:
    from tokentrail.broker.server import running_broker

    home, _ = _home_and_prefix()
    handle = running_broker(home)
    if handle is None:
        print(f"kafka stopped (home {home})")
        return 1
    print(f"kafka running at {handle.bootstrap} (pid {handle.pid}, data {handle.data_dir})")
    return 0


def _home_and_prefix() -> tuple[Path, str]:
    from tokentrail.settings import CoreSettings, load

    core = load(CoreSettings)
    return core.home, core.topic_prefix


@contextmanager
def _user_errors():
    """Turn a BrokerError into the CLI's one-line error, printing its log lines first."""
    from tokentrail.broker.jars import BrokerError

    try:
        yield
    except BrokerError as error:
        if error.details:
            print(error.details, file=sys.stderr)
        raise CliError(str(error)) from None
