"""`tokentrail` command line: one sub-command per surface of docs/architecture.md.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its parser(s) and
sets `func(args) -> int`. Modules keep heavy imports inside `func`, so `tokentrail --help`
stays fast.

Every error the user can fix is one line on stderr, `tokentrail <command>: <message>`, exit
code 2, never a traceback: ConfigError and CliError raised by a command, and argparse's own
complaints (unknown flag, bad value), which name the sub-command they belong to.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from tokentrail.errors import CliError, TokentrailError

__all__ = ["COMMAND_MODULES", "CliError", "OneLineParser", "build_parser", "fail", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "tokentrail.demo",
    "tokentrail.broker.cli",
    "mock_upstream.cli",
    "tokentrail.control.cli",
    "tokentrail.control.objectives",
    "gateway.cli",
    "flows.cli",
    "tokentrail.storage.cli",
    "tokentrail.dashboards.html",  # `report --html`: after storage.cli, which makes `report`
    "alerting.cli",
    "tokentrail.calls",
)
USAGE_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the command (`tokentrail keys
    create: ...`) plus where to look for help, instead of a usage block and `error:`."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.set_defaults(_parser=self)  # the deepest sub-command's parser wins: it reports extras

    def error(self, message: str) -> NoReturn:
        command = self.prog if self.prog.startswith("tokentrail") else f"tokentrail {self.prog}"
        self.exit(USAGE_ERROR, f"{command}: {message} (see `{command} --help`)\n")


def package_version() -> str:
    try:
        return version("tokentrail")
    except PackageNotFoundError:  # run from a source tree without an installed distribution
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="tokentrail", description="Every token has an owner: LLM gateway and analytics pipeline."
    )
    parser.add_argument("--version", action="version", version=f"tokentrail {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def fail(command: str, message: object) -> int:
    """Print the one-line error of `command` and return the exit code for it."""
    print(f"tokentrail {command}: {message}", file=sys.stderr)
    return USAGE_ERROR


def main(argv: list[str] | None = None) -> int:
    # Commands report outcomes themselves; stray library warnings (librdkafka's) stay quiet
    # unless a process configures logging (the gateway and the flows do).
    logging.getLogger("tokentrail").addHandler(logging.NullHandler())
    args, extras = build_parser().parse_known_args(argv)
    if extras:
        args._parser.error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        return int(args.func(args) or 0)
    except TokentrailError as exc:
        return fail(args.command, exc)
    except KeyboardInterrupt:
        return 130
