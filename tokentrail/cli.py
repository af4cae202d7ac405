"""`tokentrail` command line: one sub-command per surface of docs/architecture.md.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its parser(s) and
sets `func(args) -> int`. Modules keep heavy imports inside `func`, so `tokentrail --help`
stays fast. Errors the user can fix (ConfigError, CliError) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tokentrail.errors import CliError, TokentrailError

__all__ = ["COMMAND_MODULES", "CliError", "build_parser", "main"]

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
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokentrail", description="Every token has an owner: LLM gateway and analytics pipeline."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    _remember_command_parsers(parser)
    return parser


def _remember_command_parsers(parser: argparse.ArgumentParser) -> None:
    """Every sub-command parser records itself in the namespace (the deepest one wins), so an
    unknown option is reported with that sub-command's usage, not the top-level one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command_parser in action.choices.values():
                command_parser.set_defaults(command_parser=command_parser)
                _remember_command_parsers(command_parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except TokentrailError as exc:
        print(f"tokentrail {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
